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
node_pid=""
cleanup() {
  if [[ -n $node_pid ]] && kill -0 "$node_pid" 2>/dev/null; then
    kill -KILL "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

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

echo "== the trip saga completes, or refunds what it booked when the car rental fails"
"$AF" run "$SRC/examples/plans/trip-saga.yaml" --data-dir "$tmp/trip" --json >"$tmp/trip.json" ||
  { cat "$tmp/trip.json" >&2; fail "the trip saga did not complete"; }
rc=0
"$AF" run "$SRC/examples/plans/trip-saga.yaml" --set car_failures=3 --data-dir "$tmp/trip" --json \
  >"$tmp/trip_undo.json" || rc=$?
((rc == 1)) || { cat "$tmp/trip_undo.json" >&2; fail "a compensated saga exited $rc, not 1"; }
"$AF" run "$SRC/examples/plans/trip-saga.yaml" --mode dry-run >"$tmp/trip_dry.out"
grep -q "step 4: car  (agent std.fail)  compensate: agent std.echo" "$tmp/trip_dry.out" ||
  { cat "$tmp/trip_dry.out" >&2; fail "the dry run does not list the saga's steps"; }
undo_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["execution_id"])' \
  "$tmp/trip_undo.json")
"$AF" exec show "$undo_id" --data-dir "$tmp/trip" --json >"$tmp/trip_show.json"
python3 - "$tmp/trip.json" "$tmp/trip_undo.json" "$tmp/trip/agentflow.db" "$tmp/trip_show.json" <<'PY'
import json, sqlite3, sys
ok, undo = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert ok["status"] == "completed" and ok["saga"] == "completed", ok
assert ok["outputs"]["car"] == {"attempt": 1}, ok
assert undo["status"] == "failed" and undo["saga"] == "compensated", undo
assert "step 'car' failed" in undo["error"] and "undone: hotel, flight" in undo["error"], undo
show = json.load(open(sys.argv[4]))
assert show["saga"] == "compensated", show
states = {s["id"]: (s["state"], s["attempt"]) for s in show["step_list"]}
assert states["car"] == ("failed", 3), states
assert states["hotel.compensate"][0] == "completed" and "confirm.compensate" not in states, states
db = sqlite3.connect(sys.argv[3])
rows = db.execute("select step_id, amount from ledger where execution_id = ?",
                  (undo["execution_id"],)).fetchall()
got = sorted((s, float(a)) for s, a in rows)
assert got == [("flight", 420.0), ("flight.compensate", -420.0), ("hotel", 310.0),
               ("hotel.compensate", -310.0)], got
PY

echo "== a saga whose compensation keeps failing is marked stuck; af exec list shows it"
cat >"$tmp/stuck.yaml" <<'PLAN'
apiVersion: agentflow/v1
kind: Plan
metadata: {name: stuck-saga}
spec:
  type: saga
  steps:
    - id: reserve
      agent: std.ledger
      input: {amount: 5}
      compensate:
        agent: std.fail
        input: {always: true, kind: internal, message: "seat API gone"}
        retry: {backoff: 50ms, max_backoff: 200ms}
    - id: pay
      agent: std.fail
      input: {always: true, kind: validation, message: "card refused"}
      compensate: none
PLAN
"$AF" node start --data-dir "$tmp/node-data" --listen 127.0.0.1:0 --port-file "$tmp/port.json" \
  --no-demo-service >"$tmp/node.out" 2>"$tmp/node.err" &
node_pid=$!
for _ in $(seq 200); do [[ -s $tmp/port.json ]] && break; sleep 0.1; done
[[ -s $tmp/port.json ]] || { cat "$tmp/node.err" >&2; fail "the node wrote no port file"; }
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen_port"])' "$tmp/port.json")
c=(--connect "127.0.0.1:$port")
"$AF" submit "$tmp/stuck.yaml" "${c[@]}" --id trip-stuck >/dev/null
saga_state() {
  "$AF" exec list "${c[@]}" --json | python3 -c \
    'import json,sys; print({x["execution_id"]: x.get("saga") for x in json.load(sys.stdin)}.get("trip-stuck"))'
}
for _ in $(seq 100); do [[ $(saga_state) == compensating ]] && break; sleep 0.1; done
[[ $(saga_state) == compensating ]] || fail "the saga did not start compensating"
"$AF" exec stuck trip-stuck "${c[@]}" --by ops --reason "refund by hand" >"$tmp/stuck.out"
grep -q "stuck: execution trip-stuck is stuck" "$tmp/stuck.out" ||
  { cat "$tmp/stuck.out" >&2; fail "af exec stuck did not answer stuck"; }
"$AF" exec list "${c[@]}" >"$tmp/list.out"
grep -Eq "^trip-stuck +stuck +stuck-saga" "$tmp/list.out" ||
  { cat "$tmp/list.out" >&2; fail "af exec list does not show the saga stuck"; }
rc=0
"$AF" exec stuck trip-stuck "${c[@]}" >/dev/null 2>"$tmp/stuck2.err" || rc=$?
((rc == 1)) || fail "a second af exec stuck exited $rc, not 1"
grep -q "already stuck" "$tmp/stuck2.err" || { cat "$tmp/stuck2.err" >&2; fail "no 'already stuck'"; }
"$AF" exec cancel trip-stuck "${c[@]}" --by ops --reason "refunded by hand" >/dev/null
"$AF" exec list --all "${c[@]}" --json >"$tmp/list_all.json"
python3 - "$tmp/list_all.json" <<'PY'
import json, sys
x = {e["execution_id"]: e for e in json.load(open(sys.argv[1]))}["trip-stuck"]
assert x["status"] == "canceled" and x["saga"] == "stuck", x
PY
kill -TERM "$node_pid"
wait "$node_pid" || fail "the node did not stop cleanly"
node_pid=""

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
