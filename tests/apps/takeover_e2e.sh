#!/usr/bin/env bash
# Takeover of a dead node's executions, with real processes: 3 `af node start` processes on
# 127.0.0.1 (ephemeral ports) sharing one PostgreSQL store (with_postgres.sh), Raft on all three
# (--raft-members), and 50 executions of a plan with three std.ledger steps. kill -9 of the
# Raft leader while its executions run, then (after it restarted, so a majority stays) kill -9
# of another node (the new leader when it can): their executions are taken over by the
# survivors (exec_taken_over), every execution completes, the `ledger` table has exactly one row
# per ledger step (the first attempt's key), and the audit chain verifies. Then a graceful stop:
# SIGTERM of a node with executions running hands them over (af.exec stops its executors and
# releases their leases before the node leaves), and the others take them at once, well before
# the leases could have run out.
# Usage: with_postgres.sh takeover_e2e.sh PATH/TO/af   (needs AF_TEST_PG_URL)
set -euo pipefail

AF=${1:?usage: takeover_e2e.sh PATH/TO/af}
[[ -x $AF ]] || { echo "FAIL: '$AF' is not executable" >&2; exit 1; }
[[ -n ${AF_TEST_PG_URL:-} ]] || { echo "FAIL: AF_TEST_PG_URL is not set (run under with_postgres.sh)" >&2; exit 1; }
PSQL=$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)
[[ -x $PSQL ]] || { echo "FAIL: psql not found" >&2; exit 1; }

LEASE_TTL_MS=3000  # a dead node's executions wait about this long to be taken over
EXECUTIONS=50      # half before the first kill, half before the second
E2E_POLL=0.2 E2E_LOG_LINES=40 E2E_LOG_SKIP='"level":"debug"'
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
e2e_init takeover
NODE_ARGS=(--set "store.url=$AF_TEST_PG_URL" --raft-members n1,n2,n3 --set "cluster.swim.period_ms=500"
  --set "cluster.exec.lease_ttl_ms=$LEASE_TTL_MS" --set "cluster.exec.scan_ms=500")
t_start=$SECONDS

sql() { "$PSQL" -X -q -t -A -v ON_ERROR_STOP=1 "$AF_TEST_PG_URL" -c "$1"; }

cat >"$tmp/payout.yaml" <<'YAML'
apiVersion: agentflow/v1
kind: Plan
metadata: {name: takeover-payout}
spec:
  type: dag
  steps:
    - id: debit
      agent: std.ledger
      input: {amount: 10}
    - id: settle
      agent: std.sleep
      input: {ms: 7000}
      after: [debit]
    - id: credit
      agent: std.ledger
      input: {amount: 9}
      after: [settle]
    - id: clear
      agent: std.sleep
      input: {ms: 7000}
      after: [credit]
    - id: fee
      agent: std.ledger
      input: {amount: 1}
      after: [clear]
YAML
LEDGER_STEPS=3

cat >"$tmp/quick.yaml" <<'YAML'
apiVersion: agentflow/v1
kind: Plan
metadata: {name: handover-payout}
spec:
  type: dag
  steps:
    - id: debit
      agent: std.ledger
      input: {amount: 10}
    - id: settle
      agent: std.sleep
      input: {ms: 10000}
      after: [debit]
    - id: credit
      agent: std.ledger
      input: {amount: 10}
      after: [settle]
YAML
GRACEFUL=6 # executions running on the node stopped with SIGTERM

# submit_one ID NODE: submits execution ID through NODE, retried (same id: idempotent) until the
# node accepts it (no Raft leader yet, a node just restarted: `transient`).
submit_one() {
  local id=$1 node=$2 plan=${3:-$tmp/payout.yaml} port deadline=$((SECONDS + 30))
  port=$(ctl "$node")
  until "$AF" submit "$plan" --connect "127.0.0.1:$port" --id "$id" \
    >/dev/null 2>>"$tmp/submit-$node.err"; do
    ((SECONDS < deadline)) || { echo "submit of $id through $node kept failing: $(tail -n 1 "$tmp/submit-$node.err")" >&2; return 1; }
    sleep 0.2
  done
}

# submit_range FIRST LAST NODES...: submits tk-FIRST..tk-LAST round-robin through NODES, one
# sequence per node in parallel (so that they all run at once).
submit_range() {
  local first=$1 last=$2
  shift 2
  local -a nodes=("$@") waiters=()
  local k i t0=$SECONDS
  for ((k = 0; k < ${#nodes[@]}; k++)); do
    (
      for ((i = first + k; i <= last; i += ${#nodes[@]})); do
        submit_one "tk-$i" "${nodes[$k]}" || exit 1
      done
    ) &
    waiters+=($!)
  done
  for w in "${waiters[@]}"; do
    wait "$w" || fail "submitting tk-$first..tk-$last failed"
  done
  echo "submitted tk-$first..tk-$last through ${nodes[*]} in $((SECONDS - t0)) s"
}

# taken_over_from VICTIM: how many executions the nodes took over from VICTIM (their logs).
taken_over_from() {
  local n total=0 c
  for n in n1 n2 n3; do
    c=$(grep -c "\"event\":\"exec_taken_over\".*\"previous_owner\":\"$1\"" "$tmp/$n.err" || true)
    total=$((total + c))
  done
  echo "$total"
}
took_over_some() { (($(taken_over_from "$1") >= 1)); }

# raft_leader VIA: the Raft leader as node VIA sees it ("" when it knows none).
raft_leader() {
  "$AF" ask --connect "127.0.0.1:$(ctl "$1")" --timeout-ms 2000 --json af.cluster.raft \
    af.v1.RaftStatusRequest '{}' 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["payload"].get("leader", ""))' ||
    true
}
has_leader() { [[ -n $(raft_leader "$1") ]]; }

# completed_count NODE: executions `af exec list --all` reports completed through NODE.
completed_count() {
  "$AF" exec list --all --json --connect "127.0.0.1:$(ctl "$1")" 2>/dev/null |
    python3 -c 'import json, sys; print(sum(1 for e in json.load(sys.stdin) if e["status"] == "completed" and e["execution_id"].startswith("tk-")))' ||
    echo 0
}
all_completed() { (($(completed_count "$1") == EXECUTIONS)); }

# ---- three nodes, Raft on all of them -------------------------------------------------------
step="start n1, n2, n3"
start_node n1
seed="127.0.0.1:$(cport n1)"
start_node n2 "$seed"
start_node n3 "$seed"

# ---- first half, then kill -9 of the Raft leader while its executions run ----------------
half=$((EXECUTIONS / 2))
step="submit tk-1..tk-$half"
submit_range 1 "$half" n1 n2 n3
grep -q '"event":"exec_ownership"' "$tmp/n2.err" || fail "n2 runs af.exec without ownership"
sleep 1
step="kill -9 the Raft leader"
wait_until 10 has_leader n1 || fail "no Raft leader known to n1"
first=$(raft_leader n1)
[[ $first =~ ^n[123]$ ]] || fail "unexpected Raft leader '$first'"
kill9 "$first"
t_kill=$SECONDS
survivors=()
for n in n1 n2 n3; do [[ $n == "$first" ]] || survivors+=("$n"); done
step="the survivors take over $first's executions"
wait_until 30 took_over_some "$first" || fail "no exec_taken_over from $first within 30 s of its kill -9"
echo "$first (the Raft leader) killed; its executions taken over within $((SECONDS - t_kill)) s (lease ttl ${LEASE_TTL_MS} ms)"

# ---- it restarts (a majority must stay when the next node dies); second half; kill -9 again --
step="restart $first"
start_node "$first" "127.0.0.1:$(cport "${survivors[0]}")"
step="submit tk-$((half + 1))..tk-$EXECUTIONS"
submit_range $((half + 1)) "$EXECUTIONS" n3 n2 n1
sleep 1
# The second victim: another node, the new leader when that is not the first victim.
step="kill -9 a second node"
second=$(raft_leader "${survivors[0]}")
[[ $second == "$first" || ! $second =~ ^n[123]$ ]] && second=${survivors[1]}
kill9 "$second"
t_kill=$SECONDS
step="the survivors take over $second's executions"
wait_until 30 took_over_some "$second" || fail "no exec_taken_over from $second within 30 s of its kill -9"
echo "$second killed; its executions taken over within $((SECONDS - t_kill)) s"
check_node=$first

# ---- every execution completes, each ledger step once, the audit chain verifies --------------
step="every execution completes"
wait_until 60 all_completed "$check_node" ||
  fail "$(completed_count "$check_node") of $EXECUTIONS executions completed after 60 s"
for n in "${!pids[@]}"; do
  [[ $(completed_count "$n") == "$EXECUTIONS" ]] || fail "$n lists $(completed_count "$n") completed"
done
failed=$("$AF" exec list --all --json --connect "127.0.0.1:$(ctl "$check_node")" |
  python3 -c 'import json, sys; print(sum(1 for e in json.load(sys.stdin) if e["status"] != "completed"))')
((failed == 0)) || fail "$failed executions did not complete"

step="ledger rows"
rows=$(sql "SELECT count(*) FROM ledger WHERE execution_id LIKE 'tk-%'")
steps=$(sql "SELECT count(DISTINCT (execution_id, step_id)) FROM ledger WHERE execution_id LIKE 'tk-%'")
retries=$(sql "SELECT count(*) FROM ledger WHERE execution_id LIKE 'tk-%' AND key NOT LIKE '%/1'")
((rows == EXECUTIONS * LEDGER_STEPS)) ||
  fail "ledger has $rows rows for $((EXECUTIONS * LEDGER_STEPS)) ledger steps: $(sql "SELECT execution_id, step_id, count(*) FROM ledger GROUP BY 1, 2 HAVING count(*) <> 1 LIMIT 5")"
((steps == rows)) || fail "ledger: $rows rows for $steps distinct steps (a step applied twice)"
((retries == 0)) || fail "ledger: $retries rows of a retried attempt"
duplicates=0
for n in n1 n2 n3; do
  c=$(grep -c '"event":"ledger_duplicate"' "$tmp/$n.err" || true)
  duplicates=$((duplicates + c))
done
echo "ledger: $rows rows for $EXECUTIONS executions x $LEDGER_STEPS steps; $duplicates re-dispatches refused as duplicates"

step="audit verify"
"$AF" audit verify --store "$AF_TEST_PG_URL" --json >"$tmp/verify.json" 2>"$tmp/verify.err" ||
  fail "af audit verify: $(cat "$tmp/verify.json" "$tmp/verify.err")"

echo "taken over: $(taken_over_from "$first") from $first, $(taken_over_from "$second") from $second"

# ---- graceful stop: SIGTERM hands the executions over -------------------------------------------
step="restart $second"
start_node "$second" "127.0.0.1:$(cport "$first")"
wait_until 20 has_leader "$second" || fail "restarted $second knows no Raft leader"
leader=$(raft_leader "$first")
victim=""
for n in n1 n2 n3; do [[ $n == "$leader" || -n $victim ]] || victim=$n; done
step="submit tg-1..tg-$GRACEFUL through $victim"
submitters=()
for ((i = 1; i <= GRACEFUL; i++)); do
  submit_one "tg-$i" "$victim" "$tmp/quick.yaml" &
  submitters+=($!)
done
for w in "${submitters[@]}"; do wait "$w" || fail "submitting tg- executions through $victim failed"; done
handed_over() { # all tg- executions taken over from $victim
  local n total=0 c
  for n in n1 n2 n3; do
    [[ $n == "$victim" ]] && continue
    c=$(grep -c "\"event\":\"exec_taken_over\".*\"execution_id\":\"tg-[0-9]*\".*\"previous_owner\":\"$victim\"" "$tmp/$n.err" || true)
    total=$((total + c))
  done
  ((total == GRACEFUL))
}
sleep 0.5
step="SIGTERM $victim with $GRACEFUL executions running"
t_term=$(now_ms)
kill -TERM "${pids[$victim]}"
wait_until 15 handed_over || fail "the others did not take all $GRACEFUL executions over from $victim"
took_ms=$(($(now_ms) - t_term))
reap_node "$victim"
handover=$(grep '"event":"exec_handover"' "$tmp/$victim.err" | tail -n 1)
[[ -n $handover ]] || fail "$victim logged no exec_handover"
released=$(python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(j["stopped"], j["released"], j["release_failed"], j["still_running"])' "$(sed 's/^[^{]*//' <<<"$handover")")
read -r h_stopped h_released h_failed h_running <<<"$released"
((h_stopped == GRACEFUL && h_released == GRACEFUL && h_failed == 0 && h_running == 0)) ||
  fail "$victim's handover: stopped $h_stopped, released $h_released, failed $h_failed, still running $h_running (expected $GRACEFUL, $GRACEFUL, 0, 0)"
# Run out, the leases would have been free no earlier than ttl - renew_ms (2.2 s) after the SIGTERM.
((took_ms < 2000)) || fail "taking $victim's executions over took $took_ms ms after its SIGTERM (lease ttl $LEASE_TTL_MS ms): not a handover"
echo "$victim stopped with SIGTERM: $GRACEFUL executions handed over and taken within $took_ms ms (lease ttl $LEASE_TTL_MS ms)"
step="the handed-over executions complete"
check_node=$leader
tg_completed() {
  local c
  c=$("$AF" exec list --all --json --connect "127.0.0.1:$(ctl "$check_node")" 2>/dev/null |
    python3 -c 'import json, sys; print(sum(1 for e in json.load(sys.stdin) if e["status"] == "completed" and e["execution_id"].startswith("tg-")))' || echo 0)
  ((c == GRACEFUL))
}
wait_until 30 tg_completed || fail "the handed-over executions did not all complete"
rows=$(sql "SELECT count(*) FROM ledger WHERE execution_id LIKE 'tg-%'")
steps=$(sql "SELECT count(DISTINCT (execution_id, step_id)) FROM ledger WHERE execution_id LIKE 'tg-%'")
((rows == GRACEFUL * 2 && steps == rows)) ||
  fail "ledger: $rows rows for $steps distinct steps of the handed-over executions (expected $((GRACEFUL * 2)))"
"$AF" audit verify --store "$AF_TEST_PG_URL" --json >"$tmp/verify.json" 2>"$tmp/verify.err" ||
  fail "af audit verify after the handover: $(cat "$tmp/verify.json" "$tmp/verify.err")"
# Three audit writers share the chain: one that finds the head moved chains after it, never drops.
for n in n1 n2 n3; do
  ! grep -q '"event":"audit_record_dropped"' "$tmp/$n.err" ||
    fail "$n dropped audit records: $(grep -m 1 '"event":"audit_record_dropped"' "$tmp/$n.err")"
done

# ---- clean stop ---------------------------------------------------------------------------------
step="SIGTERM"
stop_nodes "${!pids[@]}"
step="done"
echo "takeover e2e: ok ($((SECONDS - t_start)) s)"
