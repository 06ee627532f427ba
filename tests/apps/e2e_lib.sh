# Helpers shared by the multi-node end-to-end scripts (cluster_e2e.sh, raft_e2e.sh,
# takeover_e2e.sh). Each script sets `set -euo pipefail` and AF, then:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
#   e2e_init NAME        # $tmp (af-NAME-e2e.XXXXXX), $tmp/secret, the cleanup trap
#   NODE_ARGS=(...)      # what start_node adds to every `af node start` of this script
#
# Variables a script may set before e2e_init: E2E_POLL (wait_until's interval, default 0.1 s),
# E2E_LOG_LINES (log lines printed per file on failure, default 30), E2E_LOG_SKIP (a grep -E
# pattern of log lines left out on failure, default none).
# Provides: tmp, pids (node name -> pid), step (what the script is doing, printed on failure),
# fail, wait_until, json_get, now_ms, start_node, ctl, cport, reap_node, stop_nodes, kill9.

e2e_init() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/af-$1-e2e.XXXXXX")
  declare -gA pids=()
  step="setup"
  trap e2e_cleanup EXIT
  trap 'exit 130' INT TERM
  head -c 32 /dev/urandom | base64 >"$tmp/secret"
}

# Kills every node still running; on failure prints the step and the tail of every node's logs.
e2e_cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  if ((rc != 0)); then
    echo "FAIL during: $step (exit $rc)" >&2
    for f in "$tmp"/*.out "$tmp"/*.err; do
      [[ -f $f ]] || continue
      echo "----- $(basename "$f") -----" >&2
      if [[ -n ${E2E_LOG_SKIP:-} ]]; then
        grep -Ev "$E2E_LOG_SKIP" "$f" | tail -n "${E2E_LOG_LINES:-30}" >&2 || true
      else
        tail -n "${E2E_LOG_LINES:-30}" "$f" >&2
      fi
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

wait_until() { # wait_until SECONDS COMMAND...: polls COMMAND every E2E_POLL seconds
  local limit=$1
  shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep "${E2E_POLL:-0.1}"
  done
}

json_get() { # json_get FILE EXPR: EXPR evaluated on the JSON object `j` in FILE
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

now_ms() { date +%s%3N; }

# start_node NAME [SEED]: starts node NAME on ephemeral loopback ports with the cluster secret
# and NODE_ARGS (joining through SEED host:port when given), and waits for its port file.
start_node() {
  local name=$1 seed=${2:-}
  rm -f "$tmp/$name.json"
  local -a join=()
  [[ -n $seed ]] && join=(--join "$seed")
  "$AF" node start --name "$name" --data-dir "$tmp/$name" \
    --listen 127.0.0.1:0 --cluster-listen 127.0.0.1:0 --cluster-secret-file "$tmp/secret" \
    "${join[@]}" "${NODE_ARGS[@]}" --no-demo-service --log-format json \
    --port-file "$tmp/$name.json" >>"$tmp/$name.out" 2>>"$tmp/$name.err" &
  pids[$name]=$!
  local deadline=$((SECONDS + 30))
  until [[ -s $tmp/$name.json ]]; do
    kill -0 "${pids[$name]}" 2>/dev/null || fail "node $name exited before writing its port file"
    ((SECONDS < deadline)) || fail "node $name wrote no port file within 30 s"
    sleep 0.05
  done
}

ctl() { json_get "$tmp/$1.json" 'j["listen_port"]'; }   # ctl NAME: its control port
cport() { json_get "$tmp/$1.json" 'j["cluster_port"]'; } # cport NAME: its cluster port

reap_node() { # reap_node NAME: waits for node NAME to exit; it must exit 0 (a clean stop)
  local rc=0
  wait "${pids[$1]}" || rc=$?
  unset "pids[$1]"
  ((rc == 0)) || fail "node $1 exited $rc on SIGTERM"
}

stop_nodes() { # stop_nodes NAME...: SIGTERM to each node, then each must exit 0
  local n
  for n in "$@"; do kill -TERM "${pids[$n]}"; done
  for n in "$@"; do reap_node "$n"; done
}

kill9() { # kill9 NAME: kill -9 of node NAME, reaped
  kill -KILL "${pids[$1]}"
  wait "${pids[$1]}" 2>/dev/null || true
  unset "pids[$1]"
}
