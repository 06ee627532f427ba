#!/usr/bin/env bash
# End-to-end test of a 3-node cluster of real `af node start` processes on 127.0.0.1 (ephemeral
# ports, one shared PostgreSQL store from with_postgres.sh): the nodes join through a seed and
# converge, virtual agents (counter/ID) are placed across them and answer through any node,
# an outsider with the wrong secret is refused, kill -9 of an owner moves its agents (state
# reloaded from the shared journal) within 3 protocol periods, every survivor declares the killed
# node dead, the node restarts and rejoins, and a node stopped with SIGTERM leaves gracefully.
# Usage: with_postgres.sh cluster_e2e.sh PATH/TO/af   (needs AF_TEST_PG_URL)
set -euo pipefail

AF=${1:?usage: cluster_e2e.sh PATH/TO/af}
[[ -x $AF ]] || { echo "FAIL: '$AF' is not executable" >&2; exit 1; }
[[ -n ${AF_TEST_PG_URL:-} ]] || { echo "FAIL: AF_TEST_PG_URL is not set (run under with_postgres.sh)" >&2; exit 1; }

PERIOD_MS=1000  # SWIM protocol period of every node (3 periods leave room for an `af` process per try)
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
e2e_init cluster
NODE_ARGS=(--set "store.url=$AF_TEST_PG_URL" --set "cluster.swim.period_ms=$PERIOD_MS")
head -c 32 /dev/urandom | base64 >"$tmp/wrong-secret"

# alive_set NODE: the sorted alive members NODE sees, comma-separated ("" when it cannot answer).
alive_set() {
  "$AF" cluster members --connect "127.0.0.1:$(ctl "$1")" --json --timeout-ms 2000 2>/dev/null |
    python3 -c 'import json, sys; j = json.load(sys.stdin); print(",".join(sorted(m["node"] for m in j["members"] if m["state"] == "alive")))' ||
    true
}
sees() { [[ $(alive_set "$1") == "$2" ]]; } # sees NODE "a,b,c"
state_of() { # state_of OBSERVER MEMBER: MEMBER's state in OBSERVER's view ("absent" if unknown)
  "$AF" cluster members --connect "127.0.0.1:$(ctl "$1")" --json --timeout-ms 2000 2>/dev/null |
    python3 -c 'import json, sys; j = json.load(sys.stdin); s = [m["state"] for m in j["members"] if m["node"] == sys.argv[1]]; print(s[0] if s else "absent")' "$2" ||
    true
}
dead_or_gone() { local s; s=$(state_of "$1" "$2"); [[ $s == dead || $s == absent ]]; }

# add VIA ID OP: adds 1 to counter/ID through node VIA with idempotency key OP; prints the
# reply JSON into $tmp/reply.json.
add() {
  "$AF" ask --connect "127.0.0.1:$(ctl "$1")" --timeout-ms "${4:-5000}" --json "counter/$2" \
    af.v1.CounterAdd "{\"op_id\": \"$3\", \"amount\": 1}" >"$tmp/reply.json" 2>"$tmp/ask.err"
}

# ---- three nodes join ------------------------------------------------------------------------
step="start n1, n2, n3"
start_node n1
seed="127.0.0.1:$(cport n1)"
[[ $seed =~ ^127\.0\.0\.1:[0-9]+$ ]] || fail "bad cluster_port in n1's port file: '$seed'"
start_node n2 "$seed"
start_node n3 "$seed"

step="membership converges"
for n in n1 n2 n3; do
  wait_until 20 sees "$n" "n1,n2,n3" || fail "$n sees '$(alive_set "$n")', not n1,n2,n3, after 20 s"
done
"$AF" cluster members --connect "127.0.0.1:$(ctl n2)" >"$tmp/members.out"
grep -q '^n1 .* alive' "$tmp/members.out" || fail "text members output lacks 'n1 ... alive'"

# ---- an outsider with the wrong secret is refused ------------------------------------------------
step="outsider refused"
"$AF" node start --name intruder --data-dir "$tmp/intruder" \
  --cluster-listen 127.0.0.1:0 --cluster-secret-file "$tmp/wrong-secret" --join "$seed" \
  --set "cluster.swim.period_ms=$PERIOD_MS" --no-demo-service --log-format json \
  >"$tmp/intruder.out" 2>"$tmp/intruder.err" &
pids[intruder]=$!
sleep $((PERIOD_MS * 6 / 1000 + 1))
for n in n1 n2 n3; do
  [[ $(state_of "$n" intruder) == absent ]] || fail "$n lists the intruder as a member"
done
grep -q '"event":"peer_refused"' "$tmp/n1.err" || fail "n1 did not log peer_refused for the intruder"
kill -TERM "${pids[intruder]}" && wait "${pids[intruder]}" || true
unset 'pids[intruder]'

# ---- virtual agents are placed across the nodes --------------------------------------------------
step="virtual agents placed across nodes"
declare -A owner=()
for id in $(seq 1 12); do
  add n1 "$id" "first-$id" || fail "counter/$id via n1: $(cat "$tmp/ask.err")"
  [[ $(json_get "$tmp/reply.json" 'j["payload"]["value"]') == 1 ]] || fail "counter/$id: $(cat "$tmp/reply.json")"
  owner[$id]=$(json_get "$tmp/reply.json" 'j["payload"]["node"]')
  # The same id through another node reaches the same activation (and the same value).
  "$AF" ask --connect "127.0.0.1:$(ctl n3)" --json "counter/$id" af.v1.CounterGet >"$tmp/get.json" ||
    fail "CounterGet counter/$id via n3"
  [[ $(json_get "$tmp/get.json" 'j["payload"]["node"]') == "${owner[$id]}" ]] ||
    fail "counter/$id answered by ${owner[$id]} via n1 but by $(json_get "$tmp/get.json" 'j["payload"]["node"]') via n3"
  [[ $(json_get "$tmp/get.json" 'j["payload"]["value"]') == 1 ]] || fail "CounterGet counter/$id: $(cat "$tmp/get.json")"
done
owners=$(printf '%s\n' "${owner[@]}" | sort -u | tr '\n' ' ')
(($(printf '%s\n' "${owner[@]}" | sort -u | wc -l) >= 2)) || fail "all 12 ids placed on one node: $owners"
# A repeated op is not applied twice.
add n2 1 first-1 || fail "repeated op"
[[ $(json_get "$tmp/reply.json" 'j["payload"]["duplicate"]') == True ]] || fail "a repeated op_id was applied again: $(cat "$tmp/reply.json")"

# ---- kill -9 an owner: its agents answer from another node within 3 periods --------------------
step="kill -9 an owner"
victim=""
for id in $(seq 1 12); do
  if [[ ${owner[$id]} != n1 ]]; then victim=${owner[$id]}; vid=$id; break; fi
done
[[ -n $victim ]] || fail "no id owned by a node other than n1"
kill9 "$victim"
t0=$(now_ms)
until add n1 "$vid" "second-$vid" 1000; do
  (($(now_ms) - t0 < 20000)) || fail "counter/$vid did not answer within 20 s of killing $victim: $(cat "$tmp/ask.err")"
  sleep 0.05
done
elapsed=$(($(now_ms) - t0))
new_owner=$(json_get "$tmp/reply.json" 'j["payload"]["node"]')
[[ $new_owner != "$victim" ]] || fail "counter/$vid answered by the killed node"
[[ $(json_get "$tmp/reply.json" 'j["payload"]["value"]') == 2 ]] ||
  fail "counter/$vid lost its state moving from $victim to $new_owner: $(cat "$tmp/reply.json")"
echo "counter/$vid answered again from $new_owner ${elapsed} ms after kill -9 of $victim (period ${PERIOD_MS} ms)"
((elapsed <= 3 * PERIOD_MS)) || fail "took ${elapsed} ms, more than 3 protocol periods (${PERIOD_MS} ms each)"

step="survivors declare the killed node dead"
for n in n1 n2 n3; do
  [[ $n == "$victim" ]] && continue
  wait_until 30 dead_or_gone "$n" "$victim" || fail "$n still sees $victim as $(state_of "$n" "$victim")"
done

# ---- the killed node restarts and rejoins ---------------------------------------------------
step="restart and rejoin"
start_node "$victim" "$seed"
[[ $victim == n1 ]] && fail "unreachable: n1 is never the victim"
for n in n1 n2 n3; do
  wait_until 30 sees "$n" "n1,n2,n3" || fail "$n sees '$(alive_set "$n")' after $victim restarted"
done
# Every counter still answers, from its owner under the new view, with its value intact.
for id in $(seq 1 12); do
  "$AF" ask --connect "127.0.0.1:$(ctl n2)" --json "counter/$id" af.v1.CounterGet >"$tmp/get.json" ||
    fail "CounterGet counter/$id after the rejoin"
  want=1
  [[ $id == "$vid" ]] && want=2
  [[ $(json_get "$tmp/get.json" 'j["payload"]["value"]') == "$want" ]] ||
    fail "counter/$id after the rejoin: $(cat "$tmp/get.json"), expected value $want"
done

# ---- graceful leave: a node stopped with SIGTERM is `left` (not dead) in the others' views ----
step="graceful leave"
stop_nodes n3
for n in n1 n2; do
  [[ $(state_of "$n" n3) == left ]] || fail "$n sees n3 as $(state_of "$n" n3) right after its SIGTERM, not left"
done
grep -q '"event":"swim_left"' "$tmp/n3.err" || fail "n3 did not log swim_left"

# ---- clean stop -------------------------------------------------------------------------------
step="SIGTERM"
stop_nodes n1 n2
step="done"
echo "cluster e2e: ok"
