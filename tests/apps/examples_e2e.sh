#!/usr/bin/env bash
# The two ways users bring their own agents, end to end through real binaries:
# `af run --plugin libaf_example_plugin.so` (examples/plugins) and a user's own node binary that
# calls af::cli::main with its agents registered (examples/custom-node).
# Usage: examples_e2e.sh PATH/TO/af PATH/TO/libaf_example_plugin.so PATH/TO/af_example_node SRC_DIR
set -euo pipefail

AF=${1:?usage: examples_e2e.sh AF PLUGIN NODE SRC_DIR}
PLUGIN=${2:?}
NODE=${3:?}
SRC=${4:?}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/af-examples-e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

echo "== af run --plugin"
"$AF" run "$SRC/examples/plans/summarize.yaml" --plugin "$PLUGIN" --data-dir "$tmp/plugin" \
  --json >"$tmp/plugin.json" || { cat "$tmp/plugin.json" >&2; fail "af run --plugin failed"; }
python3 - "$tmp/plugin.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["status"] == "completed" and j["steps_completed"] == 3, j
assert j["outputs"] == {"summary": "Actors share nothing. They talk by messages.", "words": 10}, j
PY

echo "== the plan without its plugin is refused with the missing agent named"
rc=0
"$AF" run "$SRC/examples/plans/summarize.yaml" --data-dir "$tmp/noplugin" --json \
  >"$tmp/noplugin.json" 2>"$tmp/noplugin.err" || rc=$?
((rc == 1)) || fail "af run without the plugin exited $rc, not 1"
grep -q "acme.summarize" "$tmp/noplugin.json" "$tmp/noplugin.err" ||
  fail "the failure does not name acme.summarize"

echo "== a bad --plugin path"
rc=0
"$AF" run "$SRC/examples/plans/summarize.yaml" --plugin "$tmp/nope.so" --data-dir "$tmp/bad" \
  >/dev/null 2>"$tmp/bad.err" || rc=$?
((rc != 0)) || fail "af run with a missing plugin file succeeded"
grep -q "nope.so" "$tmp/bad.err" || { cat "$tmp/bad.err" >&2; fail "the error does not name the plugin file"; }

echo "== a failing run exits 1 and keeps every audit record of it"
cat >"$tmp/fail.yaml" <<'PLAN'
apiVersion: agentflow/v1
kind: Plan
metadata: {name: doomed}
spec:
  type: dag
  steps:
    - id: boom
      agent: std.fail
      input: {always: true, kind: internal, message: "no luck"}
PLAN
rc=0
"$AF" run "$tmp/fail.yaml" --data-dir "$tmp/fail" --json >"$tmp/fail.json" || rc=$?
((rc == 1)) || fail "a failing run exited $rc, not 1"
"$AF" audit verify --data-dir "$tmp/fail" --json >"$tmp/fail_audit.json"
python3 - "$tmp/fail.json" "$tmp/fail_audit.json" <<'PY'
import json, sys
j, v = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert j["status"] == "failed" and "no luck" in j["error"], j
# execution.started, step.failed, execution.failed: the node stops right after the end,
# and the audit writer commits what it was handed before it stops.
assert v["intact"] is True and v["count"] == 3, v
PY

echo "== a dry run prints the schedule and checks the inputs as a start would"
"$AF" run "$SRC/examples/plans/payouts.yaml" --mode dry-run --set approver=alice --json \
  >"$tmp/dry.json" || fail "a good dry run failed"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["plan"] == "payouts" and j["levels"], j' "$tmp/dry.json"
rc=0
"$AF" run "$SRC/examples/plans/payouts.yaml" --mode dry-run --set nosuch=1 >/dev/null \
  2>"$tmp/dry.err" || rc=$?
((rc == 2)) || fail "a dry run with an undeclared input exited $rc, not 2"
grep -q "has no input 'nosuch'" "$tmp/dry.err" || { cat "$tmp/dry.err" >&2; fail "the bad input is not named"; }

echo "== a custom node binary"
"$NODE" run "$SRC/examples/plans/shout.yaml" --set "text=hello there" --data-dir "$tmp/node" \
  --json >"$tmp/node.json" || { cat "$tmp/node.json" >&2; fail "af_example_node run failed"; }
python3 - "$tmp/node.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["status"] == "completed" and j["steps_completed"] == 2, j
assert j["outputs"] == {"text": "HELLO THERE!!!"}, j
PY
"$NODE" audit verify --data-dir "$tmp/node" >/dev/null || fail "the custom node's audit chain"
echo "PASS"
