#!/usr/bin/env bash
# End-to-end test of the Raft metadata store on 3 real `af node start` processes on 127.0.0.1
# (ephemeral ports; each node keeps its own SQLite journal, so the log is really replicated):
# a leader is elected, acknowledged writes survive kill -9 of the leader, a new leader is elected
# within 2 s, writes go on, and the killed node, restarted, catches up by an InstallSnapshot
# (the log is compacted every 10 entries) and serves every acknowledged write from its replica.
# Usage: raft_e2e.sh PATH/TO/af
set -euo pipefail

AF=${1:?usage: raft_e2e.sh PATH/TO/af}
[[ -x $AF ]] || { echo "FAIL: '$AF' is not executable" >&2; exit 1; }

SNAPSHOT_EVERY=10
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
e2e_init raft
NODE_ARGS=(--set cluster.raft.members=n1,n2,n3 --set "cluster.raft.snapshot_every=$SNAPSHOT_EVERY"
  --set cluster.swim.period_ms=500)

# raft_field NODE EXPR: EXPR over the node's `af cluster raft --json` object `j` (fails when the
# node does not answer).
raft_field() {
  "$AF" cluster raft --connect "127.0.0.1:$(ctl "$1")" --json --timeout-ms 1000 >"$tmp/raft.json" 2>/dev/null ||
    return 1
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$tmp/raft.json" "$2"
}

# leader_of NODES...: prints the leader every listed node agrees on, or fails.
leader_of() {
  local first="" l
  for n in "$@"; do
    l=$(raft_field "$n" 'j["leader"] if j["leader"] else ""') || return 1
    [[ -n $l ]] || return 1
    [[ -z $first || $first == "$l" ]] || return 1
    first=$l
  done
  echo "$first"
}

seq_no=0
# put NODE KEY VALUE: a MetaPut through NODE (forwarded to the leader); succeeds iff acknowledged.
put() {
  seq_no=$((seq_no + 1))
  "$AF" ask --connect "127.0.0.1:$(ctl "$1")" af.cluster.raft af.v1.MetaPut \
    "{\"key\":\"$2\",\"value\":\"$3\",\"session\":{\"client_id\":\"e2e\",\"seq\":\"$seq_no\"}}" \
    --json --timeout-ms 3000 >"$tmp/put.json" 2>"$tmp/put.err"
}

# read_meta NAME NODE REQUEST_JSON PYTHON_EXPR: asks af.cluster.raft on NODE for af.v1.NAME and
# prints PYTHON_EXPR evaluated over the reply's payload `p` (stderr in $tmp/NAME.err).
read_meta() {
  local name=$1 node=$2 request=$3 expr=$4
  "$AF" ask --connect "127.0.0.1:$(ctl "$node")" af.cluster.raft "af.v1.$name" "$request" \
    --json --timeout-ms 3000 >"$tmp/$name.json" 2>"$tmp/$name.err" || return 1
  python3 -c "import json, sys; p = json.load(open(sys.argv[1]))['payload']; print($expr)" \
    "$tmp/$name.json"
}

# get NODE KEY [stale]: the value of KEY read through NODE (linearizable, or the local replica).
get() {
  local stale=false
  [[ ${3:-} == stale ]] && stale=true
  read_meta MetaGet "$1" "{\"key\":\"$2\",\"stale_ok\":$stale}" \
    "p['value'] if p.get('found') else '<absent>'"
}

# list NODE [stale]: every key under "k" read through NODE in one MetaList (linearizable, or the
# local replica), printed as sorted "key=value" lines.
list() {
  local stale=false
  [[ ${2:-} == stale ]] && stale=true
  read_meta MetaList "$1" "{\"prefix\":\"k\",\"stale_ok\":$stale}" \
    "'\\n'.join(sorted(e['key'] + '=' + e['value'] for e in p.get('entries', [])))"
}

# check_all NODE [stale]: every acknowledged write reads back through NODE.
check_all() {
  local want got
  want=$(for k in "${!acked[@]}"; do echo "$k=${acked[$k]}"; done | LC_ALL=C sort)
  got=$(list "$@") || fail "MetaList through $1 failed: $(cat "$tmp/MetaList.err")"
  [[ $got == "$want" ]] || fail "$1 ${2:-linearizable} reads differ from the acknowledged writes: $(diff <(echo "$want") <(echo "$got") | head -5 | tr '\n' ' ')"
}

step="start three Raft members"
start_node n1
start_node n2 "127.0.0.1:$(cport n1)"
start_node n3 "127.0.0.1:$(cport n1)"

step="elect a first leader"
deadline=$((SECONDS + 20))
until leader=$(leader_of n1 n2 n3); do
  ((SECONDS < deadline)) || fail "no leader all three agree on within 20 s"
  sleep 0.2
done
term=$(raft_field "$leader" 'j["term"]')
echo "leader $leader in term $term"

step="acknowledged writes before the crash"
declare -A acked=()
nodes=(n1 n2 n3)
for i in $(seq 1 25); do
  via=${nodes[$((i % 3))]}
  put "$via" "k$i" "v$i" || fail "put k$i through $via failed: $(cat "$tmp/put.err")"
  acked[k$i]=v$i
done
# A retried command (same session and sequence number) applies once: the same index comes back.
first_index=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["payload"]["index"])' "$tmp/put.json")
seq_no=$((seq_no - 1))
put n1 "k25" "v25" || fail "the retried put failed: $(cat "$tmp/put.err")"
again=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["payload"]["index"])' "$tmp/put.json")
[[ $again == "$first_index" ]] || fail "a retried put applied again (index $first_index, then $again)"

old_last=$(raft_field "$leader" 'j["last_index"]')

step="kill -9 the leader"
old=$leader
kill9 "$old"
t0=$(now_ms)
survivors=()
for n in n1 n2 n3; do [[ $n == "$old" ]] || survivors+=("$n"); done

step="elect a new leader within 2 s"
until new=$(leader_of "${survivors[@]}") && [[ $new != "$old" ]]; do
  (($(now_ms) - t0 < 15000)) || fail "no new leader among ${survivors[*]} within 15 s"
  sleep 0.05
done
# The election time comes from the new leader's own log (raft_became_leader, a wall-clock
# timestamp of this machine): polling with `af` processes would add their start-up time.
elapsed=$(python3 -c '
import datetime, json, sys
path, old_term, t0 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for line in open(path):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "raft_became_leader" and int(e.get("term", 0)) > old_term:
        ts = datetime.datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        ts = ts.replace(tzinfo=datetime.timezone.utc)
        print(int(ts.timestamp() * 1000) - t0)
        break
else:
    print(-1)
' "$tmp/$new.err" "$term" "$t0")
((elapsed >= 0)) || fail "$new agrees it leads but logged no raft_became_leader after term $term"
echo "new leader $new after ${elapsed} ms"
((elapsed <= 2000)) || fail "the new leader took ${elapsed} ms (more than 2 s)"

step="no acknowledged write lost (linearizable reads through the survivors)"
for k in k1 k25; do
  v=$(get "${survivors[0]}" "$k") || fail "get $k failed: $(cat "$tmp/MetaGet.err")"
  [[ $v == "${acked[$k]}" ]] || fail "$k reads '$v' after the crash, '${acked[$k]}' was acknowledged"
done
check_all "${survivors[0]}"
check_all "${survivors[1]}"

step="writes go on with two of three members"
for i in $(seq 26 50); do
  via=${survivors[$((i % 2))]}
  put "$via" "k$i" "v$i" || fail "put k$i through $via failed: $(cat "$tmp/put.err")"
  acked[k$i]=v$i
done
leader_commit=$(raft_field "$new" 'j["commit_index"]')
leader_snap=$(raft_field "$new" 'j["snapshot_index"]')
((leader_snap > old_last)) || fail "the leader's snapshot index is $leader_snap: the log was not compacted past the killed node's last entry $old_last"

step="restart the killed node: it catches up by snapshot"
start_node "$old" "127.0.0.1:$(cport "$new")"
deadline=$((SECONDS + 20))
until applied=$(raft_field "$old" 'j["applied_index"]') && ((applied >= leader_commit)); do
  ((SECONDS < deadline)) || fail "$old applied only ${applied:-?} of $leader_commit entries in 20 s"
  sleep 0.2
done
grep -q '"raft_snapshot_installed"' "$tmp/$old.err" "$tmp/$old.out" ||
  fail "$old caught up without installing a snapshot (the leader compacted through $leader_snap)"
v=$(get "$old" k50 stale) || fail "stale get k50 on $old failed: $(cat "$tmp/MetaGet.err")"
[[ $v == v50 ]] || fail "$old's replica has k50 = '$v', 'v50' was acknowledged"
check_all "$old" stale

step="af cluster raft prints the group"
"$AF" cluster raft --connect "127.0.0.1:$(ctl "$new")" >"$tmp/raft.out"
grep -q "leader $new" "$tmp/raft.out" || fail "af cluster raft: $(cat "$tmp/raft.out")"
grep -q "^$new \*" "$tmp/raft.out" || fail "af cluster raft does not mark itself: $(cat "$tmp/raft.out")"

echo "PASS: raft e2e (new leader in ${elapsed} ms, ${#acked[@]} acknowledged writes kept, $old caught up by snapshot)"
