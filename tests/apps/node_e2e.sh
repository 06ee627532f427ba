#!/usr/bin/env bash
# End-to-end test of a real `af node start` process on 127.0.0.1 with ephemeral ports:
# port file, `af node status --json`, `af demo --connect`, Prometheus /metrics (checked with
# promtool), feature reload on SIGHUP (a good and a bad file), a second node on a taken port,
# and a clean exit 0 on SIGTERM. Usage: node_e2e.sh PATH/TO/af
set -euo pipefail

AF=${1:?usage: node_e2e.sh PATH/TO/af}
[[ -x $AF ]] || { echo "FAIL: '$AF' is not executable" >&2; exit 1; }
for tool in curl python3 promtool; do
  command -v "$tool" >/dev/null ||
    { echo "FAIL: '$tool' not found (promtool: Debian package 'prometheus', see 'make deps')" >&2; exit 1; }
done

E2E_LOG_LINES=40
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
e2e_init node
pid="" # the node under test (also in pids[node], which the cleanup kills)

alive() { kill -0 "$pid" 2>/dev/null; }
port_file_ready() { # port_file_ready FILE
  alive || fail "the node exited before writing its port file"
  [[ -s $1 ]]
}

write_config() { # write_config FAST_PATH BATCH
  cat >"$tmp/node.yaml" <<EOF
node:
  name: e2e-node
log:
  level: info
  format: json
scheduler:
  threads: 2
features:
  fast_path: $1
  batch: $2
EOF
}

status_json() { # status_json OUTFILE: af node status --json into OUTFILE
  "$AF" node status --connect "127.0.0.1:$port" --json --timeout-ms 5000 >"$1"
}

# ---- start the node ------------------------------------------------------------------------
step="start the node"
write_config false 8
"$AF" node start --data-dir "$tmp/data" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 \
  --port-file "$tmp/ports.json" --config "$tmp/node.yaml" >"$tmp/node.out" 2>"$tmp/node.err" &
pid=$!
pids[node]=$pid
wait_until 20 port_file_ready "$tmp/ports.json" || fail "no port file within 20 s"

port=$(json_get "$tmp/ports.json" 'j["listen_port"]')
metrics=$(json_get "$tmp/ports.json" 'j["metrics_port"]')
[[ $port =~ ^[0-9]+$ && $port -gt 0 ]] || fail "bad listen_port '$port'"
[[ $metrics =~ ^[0-9]+$ && $metrics -gt 0 ]] || fail "bad metrics_port '$metrics'"
[[ $port != "$metrics" ]] || fail "listen and metrics ports are the same ($port)"
[[ $(json_get "$tmp/ports.json" 'j["pid"]') == "$pid" ]] || fail "port file pid is not $pid"
[[ $(json_get "$tmp/ports.json" 'j["name"]') == e2e-node ]] || fail "port file name is not e2e-node"
wait_until 5 grep -q "af node e2e-node running" "$tmp/node.out" ||
  fail "no 'running' line on stdout"
echo "node $pid: control port $port, metrics port $metrics"

# ---- af node status --json -----------------------------------------------------------------
step="af node status --json"
status_json "$tmp/status1.json"
python3 - "$tmp/status1.json" "$port" "$metrics" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["name"] == "e2e-node", j
assert isinstance(j["uptime_seconds"], (int, float)) and 0 <= j["uptime_seconds"] < 120, j
assert isinstance(j["agent_count"], int) and j["agent_count"] >= 1, j  # demo.service
assert j["listen_port"] == sys.argv[2], j
assert j["metrics_port"] == sys.argv[3], j
assert j["scheduler"]["threads"] == 2, j
assert j["features"] == {"fast_path": "false", "batch": "8"}, j
EOF
"$AF" node status --connect "127.0.0.1:$port" >"$tmp/status_text.out"
grep -q '^node  *e2e-node$' "$tmp/status_text.out" || fail "text status lacks the node name"
grep -q '^feature  *fast_path = false$' "$tmp/status_text.out" || fail "text status lacks fast_path"

# ---- af ask ----------------------------------------------------------------------------------
step="af ask"
"$AF" ask --connect "127.0.0.1:$port" af.control af.v1.NodeStatusRequest --json >"$tmp/ask.out"
python3 - "$tmp/ask.out" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["type"] == "af.v1.NodeStatus", j
assert j["from"] == "e2e-node/af.control", j
assert j["payload"]["name"] == "e2e-node", j
EOF
rc=0
"$AF" ask --connect "127.0.0.1:$port" af.control af.v1.NoSuchType 2>"$tmp/ask_bad.err" || rc=$?
((rc == 2)) || fail "af ask with an unknown type exited $rc, expected 2"
grep -q "unknown message type 'af.v1.NoSuchType'" "$tmp/ask_bad.err" || fail "no clear unknown-type error"
rc=0
"$AF" ask --connect "127.0.0.1:$port" af.control af.v1.DemoRequest '{"workers": "x"}' \
  2>"$tmp/ask_bad.err" || rc=$?
((rc == 2)) || fail "af ask with a malformed payload exited $rc, expected 2"
grep -q "not a valid af.v1.DemoRequest" "$tmp/ask_bad.err" || fail "no clear payload error"
rc=0
"$AF" ask --connect "127.0.0.1:$port" nobody af.v1.NodeStatusRequest 2>"$tmp/ask_bad.err" || rc=$?
((rc == 1)) || fail "af ask to a missing agent exited $rc, expected 1"
grep -q "no agent named 'nobody'" "$tmp/ask_bad.err" || fail "no clear missing-agent error"

# ---- af demo --connect ---------------------------------------------------------------------
step="af demo --connect"
"$AF" demo --connect "127.0.0.1:$port" --workers 50 --tasks 200 --limit 100000 --json \
  >"$tmp/demo.out"
python3 - "$tmp/demo.out" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["ok"] is True, j
assert j["primes"] == j["expected"] == 9592, j  # primes below 100000
assert j["workers"] == 50 and j["tasks"] == 200 and j["limit"] == 100000, j
assert j["asks"] == 600, j
EOF
alive || fail "the node died during the demo"

# ---- af node tree ----------------------------------------------------------------------------
step="af node tree"
"$AF" node tree --connect "127.0.0.1:$port" --json >"$tmp/tree.json"
python3 - "$tmp/tree.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
assert t["name"] == "af.sup.root" and t["strategy"] == "rest_for_one", t
ids = [c["id"] for c in t["children"]]
assert ids == ["af.sup.system", "af.sup.agents"], ids
system = t["children"][0]["subtree"]
assert [c["id"] for c in system["children"]] == ["af.journal", "af.audit", "af.exec", "af.control"], system
assert all(c["state"] == "running" for c in system["children"]), system
agents = t["children"][1]["subtree"]
assert agents["strategy"] == "dynamic", agents
svc = [c for c in agents["children"] if c["id"] == "demo.service"]
assert svc and svc[0]["type"] == "agent" and svc[0]["restart"] == "transient", agents
EOF
[[ -s $tmp/data/agentflow.db ]] || fail "the journal did not create $tmp/data/agentflow.db"
"$AF" node tree --connect "127.0.0.1:$port" >"$tmp/tree.txt"
grep -q '^af.sup.root  supervisor rest_for_one' "$tmp/tree.txt" || fail "text tree lacks the root"
grep -q 'demo.service  agent demo.service  transient  running  restarts=0' "$tmp/tree.txt" ||
  { cat "$tmp/tree.txt" >&2; fail "text tree lacks demo.service"; }

# ---- plans on the running node: submit, approve, pause/resume/cancel, replay -------------------
step="af submit / af exec"
cat >"$tmp/approve.yaml" <<'PLAN'
apiVersion: agentflow/v1
kind: Plan
metadata: {name: e2e-approve, tenant: default}
spec:
  type: dag
  inputs:
    who: {default: e2e}
  steps:
    - id: hello
      agent: std.echo
      input: {who: "${inputs.who}"}
    - id: sign
      approval: {prompt: "pay?"}
      after: [hello]
    - id: pay
      agent: std.ledger
      input: {amount: 5}
      after: [sign]
PLAN
# The same plan with another ledger amount: its decisions differ from e2e-1's history.
sed 's/amount: 5/amount: 7/' "$tmp/approve.yaml" >"$tmp/changed.yaml"
sed 's/name: e2e-approve/name: e2e-other/' "$tmp/approve.yaml" >"$tmp/other.yaml"
c=(--connect "127.0.0.1:$port")
"$AF" submit "$tmp/approve.yaml" "${c[@]}" --id e2e-1 --json >"$tmp/submit1.json"
[[ $(json_get "$tmp/submit1.json" 'j["execution_id"]') == e2e-1 ]] || fail "submit did not use --id"
waiting_for_approval() { # waiting_for_approval ID
  "$AF" exec show "$1" "${c[@]}" --json >"$tmp/show1.json" &&
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); s={x["id"]:x["state"] for x in j.get("step_list",[])}; sys.exit(0 if s.get("hello")=="completed" and "sign" in s and s["sign"]!="completed" else 1)' "$tmp/show1.json"
}
wait_until 20 waiting_for_approval e2e-1 || { cat "$tmp/show1.json" >&2; fail "e2e-1 never waited for its approval"; }
rc=0
"$AF" exec approve e2e-1 nosuch "${c[@]}" >/dev/null 2>"$tmp/approve_bad.err" || rc=$?
((rc != 0)) || fail "approving a step that does not wait for approval succeeded"
grep -q "waiting: sign" "$tmp/approve_bad.err" || fail "the bad approval does not name the waiting step"
"$AF" exec approve e2e-1 sign "${c[@]}" --by ops --reason e2e >/dev/null
# Submitting the same id again attaches to the execution; --wait waits for its end.
"$AF" submit "$tmp/approve.yaml" "${c[@]}" --id e2e-1 --wait --json >"$tmp/end1.json"
python3 - "$tmp/end1.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["status"] == "completed" and j["steps_completed"] == 3, j
assert j["ended_at_ns"] >= j["started_at_ns"] > 0, j
PY
rc=0
"$AF" submit "$tmp/other.yaml" "${c[@]}" --id e2e-1 >/dev/null 2>"$tmp/other.err" || rc=$?
((rc != 0)) || fail "submitting another plan under an existing id succeeded"
grep -q "already exists" "$tmp/other.err" || fail "the id conflict is not explained"

"$AF" submit "$tmp/approve.yaml" "${c[@]}" --id e2e-2 >/dev/null
wait_until 20 waiting_for_approval e2e-2 || { cat "$tmp/show1.json" >&2; fail "e2e-2 never waited for its approval"; }
"$AF" exec pause e2e-2 "${c[@]}" --by ops --json >"$tmp/pause.json"
[[ $(json_get "$tmp/pause.json" 'j["status"]') == paused ]] || fail "pause did not pause"
"$AF" exec resume e2e-2 "${c[@]}" --by ops >/dev/null
"$AF" exec cancel e2e-2 "${c[@]}" --by ops --reason "e2e test" --json >"$tmp/cancel.json"
[[ $(json_get "$tmp/cancel.json" 'j["status"]') == canceled ]] || fail "cancel did not cancel"
rc=0
"$AF" exec resume e2e-2 "${c[@]}" >/dev/null 2>"$tmp/resume_ended.err" || rc=$?
((rc == 1)) || fail "resuming a canceled execution exited $rc, not 1"

"$AF" exec list --all "${c[@]}" --json >"$tmp/list.json"
python3 - "$tmp/list.json" <<'PY'
import json, sys
s = {x["execution_id"]: x["status"] for x in json.load(open(sys.argv[1]))}
assert s.get("e2e-1") == "completed" and s.get("e2e-2") == "canceled", s
PY
"$AF" exec replay e2e-1 "${c[@]}" >"$tmp/replay.out" || fail "replay of e2e-1 did not reproduce it"
grep -q "compatible" "$tmp/replay.out" || fail "replay output lacks 'compatible'"
rc=0
"$AF" exec replay e2e-1 --plan "$tmp/changed.yaml" "${c[@]}" >"$tmp/replay2.out" || rc=$?
((rc == 1)) || fail "replay against a changed plan exited $rc, not 1"
grep -q "DIVERGED" "$tmp/replay2.out" || fail "replay against a changed plan names no divergence"
echo "plans: e2e-1 completed after approval, e2e-2 canceled; $(cat "$tmp/replay.out")"

# ---- metrics ---------------------------------------------------------------------------------
step="metrics"
curl -s --max-time 10 -o "$tmp/metrics.txt" -w '%{http_code}' "http://127.0.0.1:$metrics/metrics" \
  >"$tmp/metrics.code"
[[ $(cat "$tmp/metrics.code") == 200 ]] || fail "GET /metrics: HTTP $(cat "$tmp/metrics.code")"
promtool check metrics <"$tmp/metrics.txt" >"$tmp/promtool.out" 2>&1 ||
  { cat "$tmp/promtool.out" >&2; fail "promtool check metrics found problems"; }
total=$(awk '$1 ~ /^af_agent_messages_total(\{|$)/ { s += $NF } END { printf "%d", s }' \
  "$tmp/metrics.txt")
((total > 0)) || fail "af_agent_messages_total is $total after the demo"
echo "af_agent_messages_total: $total"

# ---- SIGHUP reloads the feature flags ----------------------------------------------------------
step="SIGHUP reload"
write_config true 8
kill -HUP "$pid"
fast_path_is() {
  status_json "$tmp/status2.json" &&
    [[ $(json_get "$tmp/status2.json" 'j["features"].get("fast_path")') == "$1" ]]
}
wait_until 10 fast_path_is true || fail "fast_path is not 'true' 10 s after SIGHUP"
[[ $(json_get "$tmp/status2.json" 'j["features"]["batch"]') == 8 ]] || fail "batch changed"

step="SIGHUP with a bad file"
printf 'features:\n  fast_path: [oops\n' >"$tmp/node.yaml"
kill -HUP "$pid"
sleep 1
alive || fail "the node died on SIGHUP with a bad file"
wait_until 10 grep -q features_reload_failed "$tmp/node.err" ||
  fail "no features_reload_failed log line after a bad reload"
fast_path_is true || fail "a bad reload changed the flags"

# ---- a second node on the same port fails ------------------------------------------------------
step="second node on a taken port"
rc=0
timeout 20 "$AF" node start --data-dir "$tmp/data2" --listen "127.0.0.1:$port" \
  --port-file "$tmp/ports2.json" --no-demo-service >"$tmp/second.out" 2>"$tmp/second.err" || rc=$?
((rc != 124)) || fail "the second node on port $port kept running"
((rc != 0)) || fail "the second node on port $port exited 0"
grep -q "cannot listen on 127.0.0.1:$port" "$tmp/second.err" ||
  fail "the second node's error does not say it cannot listen on 127.0.0.1:$port"
[[ ! -e $tmp/ports2.json ]] || fail "the second node wrote a port file"
echo "second node on port $port: exit $rc, $(grep -m1 'cannot listen' "$tmp/second.err")"

step="second node on a taken metrics port"
rc=0
timeout 20 "$AF" node start --data-dir "$tmp/data3" --listen 127.0.0.1:0 \
  --metrics "127.0.0.1:$metrics" --no-demo-service >"$tmp/third.out" 2>"$tmp/third.err" || rc=$?
((rc != 124)) || fail "the second node on metrics port $metrics kept running"
((rc != 0)) || fail "the second node on metrics port $metrics exited 0"
grep -q "$metrics" "$tmp/third.err" || fail "the error does not name metrics port $metrics"
echo "second node on metrics port $metrics: exit $rc, $(grep -m1 '^af: ' "$tmp/third.err")"
alive || fail "the first node died while others tried its ports"
status_json "$tmp/status3.json" || fail "the first node no longer answers"

# ---- SIGTERM stops the node cleanly -----------------------------------------------------------
step="SIGTERM"
kill -TERM "$pid"
wait_until 20 eval '! alive' || fail "the node still runs 20 s after SIGTERM"
rc=0
wait "$pid" || rc=$?
pid=""
unset "pids[node]"
((rc == 0)) || fail "the node exited $rc after SIGTERM"
grep -q "af node e2e-node stopped" "$tmp/node.out" || fail "no 'stopped' line on stdout"

rc=0
"$AF" node status --connect "127.0.0.1:$port" --timeout-ms 2000 >/dev/null 2>"$tmp/after.err" || rc=$?
((rc != 0)) || fail "af node status still succeeds after the node stopped"

# ---- the node's store: schema applied, audit chain verifies --------------------------------------
step="af db status / af audit verify"
"$AF" db status --data-dir "$tmp/data" --json >"$tmp/db.json"
"$AF" audit verify --data-dir "$tmp/data" --json >"$tmp/verify.json"
python3 - "$tmp/db.json" "$tmp/verify.json" <<'EOF'
import json, sys
db = json.load(open(sys.argv[1]))
assert db["backend"] == "sqlite", db
assert db["schema_version"] == db["latest_schema_version"] >= 2, db
v = json.load(open(sys.argv[2]))
# e2e-1: started, step hello, approved sign, step pay, completed;
# e2e-2: started, step hello, paused, resumed, canceled.
assert v["intact"] is True and v["count"] == 10, v
EOF
python3 - "$tmp/data/agentflow.db" <<'EOF'
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("select execution_id, step_id from ledger").fetchall()
assert rows == [("e2e-1", "pay")], rows
EOF

# ---- a restarted node answers for an ended execution without redoing or re-auditing it ---------
step="restart: submit an ended id"
"$AF" node start --data-dir "$tmp/data" --no-demo-service --port-file "$tmp/ports5.json" \
  --listen 127.0.0.1:0 >"$tmp/restart.out" 2>"$tmp/restart.err" &
pid=$!
pids[node]=$pid
wait_until 20 port_file_ready "$tmp/ports5.json" || fail "no port file within 20 s"
port=$(json_get "$tmp/ports5.json" 'j["listen_port"]')
"$AF" submit "$tmp/approve.yaml" --connect "127.0.0.1:$port" --id e2e-1 --wait --json \
  >"$tmp/again.json"
python3 - "$tmp/again.json" "$tmp/end1.json" <<'EOF'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a["status"] == "completed" and a["ended_at_ns"] == b["ended_at_ns"], (a, b)
EOF
kill -TERM "$pid"
wait_until 20 eval '! alive' || fail "the restarted node still runs 20 s after SIGTERM"
wait "$pid" || fail "the restarted node exited non-zero"
pid=""
unset "pids[node]"
"$AF" audit verify --data-dir "$tmp/data" --json >"$tmp/verify2.json"
[[ $(json_get "$tmp/verify2.json" 'j["count"]') == 10 ]] || fail "the restart added audit records"
"$AF" exec list --all --data-dir "$tmp/data" --json >"$tmp/list_store.json"
python3 - "$tmp/list_store.json" <<'PY'
import json, sys
s = {x["execution_id"]: (x["status"], x["plan"]) for x in json.load(open(sys.argv[1]))}
assert s == {"e2e-1": ("completed", "e2e-approve"), "e2e-2": ("canceled", "e2e-approve")}, s
PY
"$AF" exec list --data-dir "$tmp/data" --json >"$tmp/list_open.json"
[[ $(cat "$tmp/list_open.json") == "[]" ]] || fail "af exec list shows ended executions without --all"

# ---- SIGHUP on a node started without --config is logged, not ignored -------------------------
step="SIGHUP without --config"
"$AF" node start --data-dir "$tmp/data4" --no-demo-service --port-file "$tmp/ports4.json" \
  >"$tmp/noconfig.out" 2>"$tmp/noconfig.err" &
pid=$!
pids[node]=$pid
wait_until 20 port_file_ready "$tmp/ports4.json" || fail "no port file within 20 s"
kill -HUP "$pid"
wait_until 10 grep -q "without a configuration file" "$tmp/noconfig.err" ||
  fail "SIGHUP without --config left no log line"
alive || fail "the node died on SIGHUP without --config"
kill -TERM "$pid"
wait_until 20 eval '! alive' || fail "the node still runs 20 s after SIGTERM"
rc=0
wait "$pid" || rc=$?
pid=""
unset "pids[node]"
((rc == 0)) || fail "the node without --config exited $rc after SIGTERM"

step="done"
echo "PASS"
