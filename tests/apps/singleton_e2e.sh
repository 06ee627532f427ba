#!/usr/bin/env bash
# Cluster singletons with real processes: 3 `af node start` on 127.0.0.1 with Raft, each
# registering std.counter as a singleton (cluster.singletons). Exactly one node runs it and every
# node reaches that one instance through `singleton/std.counter` (one counter for all three);
# SIGTERM of its node hands it over (lease released: another node runs it well before the lease
# could have expired); kill -9 of the next node moves it once the lease expired.
# Usage: singleton_e2e.sh PATH/TO/af
set -euo pipefail

AF=${1:?usage: singleton_e2e.sh PATH/TO/af}
[[ -x $AF ]] || { echo "FAIL: '$AF' is not executable" >&2; exit 1; }

LEASE_TTL_MS=3000
E2E_POLL=0.1
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
e2e_init singleton
NODE_ARGS=(--set cluster.raft.members=n1,n2,n3 --set cluster.swim.period_ms=500
  --set cluster.singletons=std.counter --set "cluster.exec.lease_ttl_ms=$LEASE_TTL_MS")
t_start=$SECONDS

# status NODE: "OWNER RUNNING_HERE" as NODE's af.cluster.singletons reports std.counter.
status() {
  "$AF" ask --connect "127.0.0.1:$(ctl "$1")" --timeout-ms 2000 --json af.cluster.singletons \
    af.v1.SingletonStatusRequest '{}' 2>/dev/null |
    python3 -c 'import json, sys; s = json.load(sys.stdin)["payload"]["singletons"][0]; print(s.get("owner", "") or "-", "yes" if s.get("runningHere", s.get("running_here")) else "no")'
}

# runner NODES...: the node every listed node names as the runner, exactly one of them running
# it; fails otherwise.
runner() {
  local n owner="" running=0 o r
  for n in "$@"; do
    read -r o r <<<"$(status "$n")" || return 1
    [[ $o != - ]] || return 1
    [[ -z $owner || $owner == "$o" ]] || return 1
    owner=$o
    [[ $r == yes ]] && running=$((running + 1))
    [[ $r == no || $n == "$o" ]] || return 1
  done
  ((running == 1)) || return 1
  echo "$owner"
}
agreed() { runner "$@" >/dev/null; }

# count VIA: adds 1 to the singleton counter through node VIA; prints the count.
count() {
  "$AF" ask --connect "127.0.0.1:$(ctl "$1")" --timeout-ms 3000 --json singleton/std.counter \
    af.v1.StepRequest '{"input_json": "{\"name\": \"e2e\", \"by\": 1}"}' |
    python3 -c 'import json, sys; p = json.load(sys.stdin)["payload"]; print(json.loads(p.get("output_json", p.get("outputJson")))["count"])'
}

step="start three nodes"
start_node n1
seed="127.0.0.1:$(cport n1)"
start_node n2 "$seed"
start_node n3 "$seed"

step="one node runs the singleton, all agree"
wait_until 30 agreed n1 n2 n3 || fail "the nodes do not agree on one runner: n1 $(status n1), n2 $(status n2), n3 $(status n3)"
first=$(runner n1 n2 n3)
echo "singleton/std.counter runs on $first"

step="every node reaches the one instance"
c1=$(count n1) c2=$(count n2) c3=$(count n3)
[[ "$c1 $c2 $c3" == "1 2 3" ]] || fail "counts through n1, n2, n3: $c1 $c2 $c3 (one instance would give 1 2 3)"

step="SIGTERM $first hands it over"
others=()
for n in n1 n2 n3; do [[ $n == "$first" ]] || others+=("$n"); done
started_elsewhere() { cat "$tmp/${others[0]}.err" "$tmp/${others[1]}.err" | grep -q '"event":"singleton_started"'; }
kill -TERM "${pids[$first]}"
wait_until 10 started_elsewhere || fail "no other node started the singleton 10 s after $first's SIGTERM"
reap_node "$first"
grep -q '"event":"singleton_stopped"' "$tmp/$first.err" || fail "$first logged no singleton_stopped"
moved() { local r; r=$(runner "${others[@]}") && [[ $r != "$first" ]]; }
wait_until 10 moved || fail "the survivors do not agree on the new runner: $(status "${others[0]}"), $(status "${others[1]}")"
second=$(runner "${others[@]}")
# From the logs: the SIGTERM on $first to the start on $second. Without the release the lease
# would run out no earlier than ttl - renew_ms (2.2 s) after the SIGTERM.
took=$(python3 - "$tmp/$first.err" "$tmp/$second.err" <<'PY2'
import datetime, json, sys
def ts(path, event):
    for line in open(path):
        if '"event":"%s"' % event in line:
            return datetime.datetime.fromisoformat(json.loads(line[line.index("{"):])["ts"].rstrip("Z"))
print(int((ts(sys.argv[2], "singleton_started") - ts(sys.argv[1], "signal_received")).total_seconds() * 1000))
PY2
)
((took < 2000)) || fail "the singleton started on $second $took ms after $first's SIGTERM (lease ttl $LEASE_TTL_MS ms): not a handover"
echo "SIGTERM of $first: the singleton started on $second $took ms later"
c=$(count "${others[0]}")
[[ $c == 1 ]] || fail "the moved singleton counts $c (a fresh instance starts at 1)"

step="restart $first, kill -9 $second: the singleton moves once its lease expired"
keeper=${others[0]}
[[ $keeper == "$second" ]] && keeper=${others[1]}
start_node "$first" "127.0.0.1:$(cport "$keeper")" # joins through the node that stays up
wait_until 30 agreed n1 n2 n3 || fail "restarted $first does not agree on the runner: $(status "$first")"
t_kill=$(now_ms)
kill9 "$second"
survivors=()
for n in n1 n2 n3; do [[ $n == "$second" ]] || survivors+=("$n"); done
moved_again() { local r; r=$(runner "${survivors[@]}") && [[ $r != "$second" ]]; }
wait_until 30 moved_again || fail "no survivor runs the singleton 30 s after kill -9 of $second"
echo "kill -9 of $second: the singleton runs on $(runner "${survivors[@]}") after $(($(now_ms) - t_kill)) ms"

step="SIGTERM"
stop_nodes "${!pids[@]}"
step="done"
echo "singleton e2e: ok ($((SECONDS - t_start)) s)"
