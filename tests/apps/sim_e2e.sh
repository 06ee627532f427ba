#!/usr/bin/env bash
# `af sim run` and `af sim fuzz` through the real binary (issue 6, "Tests"): the same seed gives
# the same trace hash in two processes, another seed another hash; exit codes 0/1/2; --trace and
# --until; fuzzing finds the bug planted in examples/sim/planted-bug.yaml (test.buggy_worker, a
# test plugin: tests/sim/plugins/buggy_worker.cpp) and the replay command it prints reproduces it;
# --history writes the raft-kv clients' operations in the documented format.
# Usage: sim_e2e.sh PATH/TO/af SRC_DIR PATH/TO/libaf_test_sim_buggy.so
set -euo pipefail

AF=${1:?usage: sim_e2e.sh AF SRC_DIR}
SRC=${2:?usage: sim_e2e.sh AF SRC_DIR PLUGIN}
PLUGIN=${3:?usage: sim_e2e.sh AF SRC_DIR PLUGIN}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/af-sim-e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$SRC" # scenario paths and the printed replay commands are relative to the source tree

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# json FILE EXPR: prints the Python expression EXPR evaluated on the JSON object in FILE (as j).
json() {
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

WORK=examples/sim/work-exchange.yaml

# twice SCENARIO SEED A B: runs the seed in two processes at once, reports in $tmp/A.json and
# $tmp/B.json; fails unless both exit 0.
twice() {
  local pa pb ra=0 rb=0
  "$AF" sim run "$1" --seed "$2" --json >"$tmp/$3.json" 2>"$tmp/$3.err" &
  pa=$!
  "$AF" sim run "$1" --seed "$2" --json >"$tmp/$4.json" 2>"$tmp/$4.err" &
  pb=$!
  wait "$pa" || ra=$?
  wait "$pb" || rb=$?
  ((ra == 0)) || { cat "$tmp/$3.err" "$tmp/$3.json" >&2; fail "$1 seed $2 exited $ra, not 0"; }
  ((rb == 0)) || { cat "$tmp/$4.err" "$tmp/$4.json" >&2; fail "$1 seed $2 (second process) exited $rb"; }
}
BUG=examples/sim/planted-bug.yaml

echo "== same seed, two processes at once: the same trace hash"
twice "$WORK" 7 a b
hash_a=$(json "$tmp/a.json" 'j["trace_hash"]')
hash_b=$(json "$tmp/b.json" 'j["trace_hash"]')
[[ $hash_a =~ ^[0-9a-f]{64}$ ]] || fail "trace_hash '$hash_a' is not 64 hex digits"
[[ $hash_a == "$hash_b" ]] || fail "seed 7 gave two trace hashes: $hash_a and $hash_b"
[[ $(json "$tmp/a.json" 'j["ok"]') == True ]] || fail "seed 7 report is not ok"
[[ $(json "$tmp/a.json" 'j["seed"]') == 7 ]] || fail "the report does not carry seed 7"
[[ $(json "$tmp/a.json" 'j["agents"] >= 1000') == True ]] || fail "fewer than 1,000 agents"
[[ $(json "$tmp/a.json" 'j["delivered"] > 0 and j["dropped"] > 0') == True ]] ||
  fail "no deliveries or no drops despite 1% loss and a partition"
[[ $(json "$tmp/a.json" 'j["replay"]') == "af sim run $WORK --seed 7" ]] ||
  fail "the JSON replay command is not 'af sim run $WORK --seed 7'"
# The two reports agree on everything but wall time.
python3 - "$tmp/a.json" "$tmp/b.json" <<'PY' || fail "the two reports of seed 7 differ beyond wall time"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
for k in ("wall_seconds", "deliveries_per_second"):
    a.pop(k), b.pop(k)
assert a == b, (a, b)
PY

echo "== the other built-in scenarios: two processes, one hash; invariants hold"
for scen in examples/sim/crash-storm.yaml examples/sim/durable-workflows.yaml; do
  twice "$scen" 3 s1 s2
  [[ $(json "$tmp/s1.json" 'j["trace_hash"]') == $(json "$tmp/s2.json" 'j["trace_hash"]') ]] ||
    fail "$scen: two processes, seed 3, two trace hashes"
  [[ $(json "$tmp/s1.json" 'j["crashes"] > 0') == True ]] || fail "$scen: no node crashed"
done

echo "== another seed: another trace hash"
"$AF" sim run "$WORK" --seed 8 --json >"$tmp/c.json" || fail "seed 8 exited $?"
[[ $(json "$tmp/c.json" 'j["trace_hash"]') != "$hash_a" ]] || fail "seeds 7 and 8 gave the same hash"

echo "== the text report carries the same hash"
"$AF" sim run "$WORK" --seed 7 >"$tmp/text.out" || fail "text run of seed 7 failed"
grep -q "^trace hash  $hash_a\$" "$tmp/text.out" || { cat "$tmp/text.out" >&2; fail "text hash differs"; }
grep -q "^result      OK" "$tmp/text.out" || fail "the text report does not say OK"

echo "== --trace writes one line per delivered envelope; the trace does not change the hash"
"$AF" sim run "$WORK" --seed 7 --json --trace "$tmp/trace.jsonl" >"$tmp/t.json" ||
  fail "run with --trace failed"
[[ $(json "$tmp/t.json" 'j["trace_hash"]') == "$hash_a" ]] || fail "--trace changed the trace hash"
lines=$(wc -l <"$tmp/trace.jsonl")
[[ $lines == $(json "$tmp/t.json" 'j["delivered"]') ]] ||
  fail "--trace wrote $lines lines for $(json "$tmp/t.json" 'j["delivered"]') deliveries"
python3 - "$tmp/trace.jsonl" <<'PY' || fail "--trace lines are not JSON objects"
import json, sys
for line in open(sys.argv[1]):
    assert isinstance(json.loads(line), dict), line
PY

echo "== --until stops early, at that virtual time"
"$AF" sim run "$WORK" --seed 7 --json --until 5s >"$tmp/u.json" || true
[[ $(json "$tmp/u.json" 'j["stopped_early"]') == True ]] || fail "--until 5s did not stop early"
[[ $(json "$tmp/u.json" 'j["virtual_time_ns"] <= 5_000_000_000') == True ]] ||
  fail "--until 5s ran to $(json "$tmp/u.json" 'j["virtual_time_ns"]') ns"

echo "== an invalid scenario exits 2 naming file:line:col"
cat >"$tmp/bad.yaml" <<'YAML'
apiVersion: agentflow/v1
kind: Scenario
metadata: {name: bad}
spec:
  nodes: [n1, n2]
  faults: {schedule: [{at: 1s, crash: n9}]}
YAML
rc=0
"$AF" sim run "$tmp/bad.yaml" --seed 1 >"$tmp/bad.out" 2>"$tmp/bad.err" || rc=$?
((rc == 2)) || fail "an invalid scenario exited $rc, not 2"
grep -qF "$tmp/bad.yaml:6:39: spec.faults.schedule[0].crash: unknown node 'n9'" "$tmp/bad.err" ||
  { cat "$tmp/bad.err" >&2; fail "the error does not name file:line:col"; }

echo "== an unknown agent type exits 2 naming it"
cat >"$tmp/notype.yaml" <<'YAML'
apiVersion: agentflow/v1
kind: Scenario
metadata: {name: notype}
spec:
  populations: [{type: acme.nothing}]
YAML
rc=0
"$AF" sim run "$tmp/notype.yaml" >/dev/null 2>"$tmp/notype.err" || rc=$?
((rc == 2)) || fail "an unknown agent type exited $rc, not 2"
grep -q "acme.nothing" "$tmp/notype.err" || fail "the error does not name acme.nothing"

echo "== fuzz over seeds that pass: exit 0 and a summary"
"$AF" sim fuzz "$WORK" --seeds 1..4 --jobs 2 >"$tmp/fuzz_ok.out" ||
  { cat "$tmp/fuzz_ok.out" >&2; fail "fuzz over passing seeds exited $?"; }
grep -q "^fuzz work-exchange: 4 seeds run (1..4), 0 failed" "$tmp/fuzz_ok.out" ||
  { cat "$tmp/fuzz_ok.out" >&2; fail "no summary line"; }

echo "== fuzz finds the planted bug within 1,000 seeds"
rc=0
"$AF" sim fuzz "$BUG" --plugin "$PLUGIN" --seeds 1..1000 --jobs 2 --stop-after 1 --json >"$tmp/fuzz.json" || rc=$?
((rc == 1)) || { cat "$tmp/fuzz.json" >&2; fail "fuzz of the planted bug exited $rc, not 1"; }
[[ $(json "$tmp/fuzz.json" 'j["failed"] >= 1') == True ]] || fail "fuzz found no failing seed"
seed=$(json "$tmp/fuzz.json" 'j["failures"][0]["seed"]')
[[ $(json "$tmp/fuzz.json" 'j["failures"][0]["invariant"]') == tasks_answered_once ]] ||
  fail "seed $seed did not fail tasks_answered_once"
replay=$(json "$tmp/fuzz.json" 'j["failures"][0]["replay"]')
[[ $replay == "af sim run $BUG --seed $seed --plugin $PLUGIN" ]] || fail "replay command '$replay'"

echo "== the printed replay command reproduces it (seed $seed)"
rc=0
"$AF" ${replay#af } >"$tmp/replay.out" || rc=$?
((rc == 1)) || { cat "$tmp/replay.out" >&2; fail "the replay exited $rc, not 1"; }
grep -q "^result      FAILED: invariant tasks_answered_once at virtual time .* with seed $seed\$" \
  "$tmp/replay.out" || { cat "$tmp/replay.out" >&2; fail "the replay does not name the invariant"; }
grep -qF "replay      af sim run $BUG --seed $seed --plugin $PLUGIN" "$tmp/replay.out" ||
  fail "the failing run does not print its replay command"
"$AF" sim run "$BUG" --seed "$seed" --plugin "$PLUGIN" --json >"$tmp/r1.json" || true
"$AF" sim run "$BUG" --seed "$seed" --plugin "$PLUGIN" --json >"$tmp/r2.json" || true
[[ $(json "$tmp/r1.json" 'j["trace_hash"]') == $(json "$tmp/r2.json" 'j["trace_hash"]') ]] ||
  fail "the failing seed is not deterministic"

echo "== fuzz text output names the seed, the invariant and the replay command"
rc=0
"$AF" sim fuzz "$BUG" --plugin "$PLUGIN" --seeds "$seed..$seed" >"$tmp/fuzz.out" || rc=$?
((rc == 1)) || fail "fuzz of one failing seed exited $rc, not 1"
grep -q "^seed $seed: FAILED invariant tasks_answered_once at virtual time" "$tmp/fuzz.out" ||
  { cat "$tmp/fuzz.out" >&2; fail "no failure line"; }
grep -qF "  replay: af sim run $BUG --seed $seed --plugin $PLUGIN" "$tmp/fuzz.out" || fail "no replay line"
grep -q "1 seeds run ($seed..$seed), 1 failed (seeds $seed)" "$tmp/fuzz.out" || fail "no summary"

echo "== fuzz counts a worker that exits 2 as failed, with its stderr"
rc=0
cp "$tmp/notype.yaml" "$tmp/notype2.yaml"
"$AF" sim fuzz "$tmp/notype2.yaml" --seeds 1..2 >"$tmp/fuzz2.out" 2>&1 || rc=$?
((rc == 1)) || { cat "$tmp/fuzz2.out" >&2; fail "fuzz with failing workers exited $rc, not 1"; }
grep -q "FAILED: the worker exited with 2" "$tmp/fuzz2.out" || fail "the worker's exit is not shown"
grep -q "  | .*acme.nothing" "$tmp/fuzz2.out" || fail "the worker's stderr is not shown"

echo "== --history: the raft-kv clients' operations as JSON lines (docs/simulation.md)"
KV=examples/sim/raft-kv.yaml
"$AF" sim run "$KV" --seed 7 --history "$tmp/h.jsonl" --json >"$tmp/kv.json" ||
  fail "raft-kv seed 7 exited $?"
[[ $(json "$tmp/kv.json" 'j["ok"]') == True ]] || fail "raft-kv seed 7: an invariant failed"
python3 - "$tmp/h.jsonl" "$tmp/kv.json" <<'PY' || fail "the history file is not valid"
import json, sys
ops = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
rep = json.load(open(sys.argv[2]))
assert len(ops) == rep["kv"]["ops"] > 0, (len(ops), rep["kv"])
need = {"client", "op", "key", "value", "call"}
for o in ops:
    assert need <= o.keys() <= need | {"expected", "ok", "return"}, o
    assert isinstance(o["client"], int) and 0 <= o["client"] < rep["kv"]["clients"], o
    assert o["op"] in ("put", "get", "cas"), o
    assert isinstance(o["key"], str) and isinstance(o["value"], str), o
    assert isinstance(o["call"], int) and o["call"] >= 0, o
    assert ("expected" in o) == (o["op"] == "cas"), o
    if "return" in o:
        assert isinstance(o["return"], int) and o["return"] >= o["call"], o
        assert ("ok" in o) == (o["op"] == "cas"), o
    else:
        assert "ok" not in o, o
# Each client is sequential: an operation starts after its previous one returned.
by_client = {}
for o in ops:
    by_client.setdefault(o["client"], []).append(o)
for c, mine in by_client.items():
    mine.sort(key=lambda o: o["call"])
    for a, b in zip(mine, mine[1:]):
        assert "return" not in a or b["call"] >= a["return"], (a, b)
assert sum("return" not in o for o in ops) == rep["kv"]["unknown"]
assert [i["ok"] for i in rep["invariants"] if i["name"] == "linearizable"] == [True]
PY
"$AF" sim run "$KV" --seed 7 --history "$tmp/h2.jsonl" >/dev/null || fail "raft-kv seed 7 rerun failed"
cmp -s "$tmp/h.jsonl" "$tmp/h2.jsonl" || fail "seed 7 wrote two different histories"
rc=0
"$AF" sim run "$WORK" --seed 1 --history "$tmp/none.jsonl" >"$tmp/none.out" 2>&1 || rc=$?
((rc == 2)) || { cat "$tmp/none.out" >&2; fail "--history without kv_clients exited $rc, not 2"; }
grep -q "no kv_clients section" "$tmp/none.out" || fail "--history refusal does not say why"
[[ ! -e $tmp/none.jsonl ]] || fail "--history without kv_clients wrote a file"

echo "sim e2e: all checks passed"
