#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL 15 server on 127.0.0.1 (ephemeral port, temp dir),
# then stops the server and deletes its files, also on failure, Ctrl-C, TERM or a SIGKILL of this
# script; exits with the command's status. A full cycle takes ~2-3 s (initdb is most of it).
#
# Usage:
#   tests/persistence/with_postgres.sh COMMAND [ARGS...]
#   tests/persistence/with_postgres.sh build/h-pg/tests/af_persistence_tests "[conformance]"
#   tests/persistence/with_postgres.sh sh -c 'psql "$AF_TEST_PG_URL"'
#       by hand: single quotes, so that the variable is expanded inside, not by your shell
#   echo 'SELECT 1' | tests/persistence/with_postgres.sh sh -c 'psql "$AF_TEST_PG_URL"' 
#   tests/persistence/with_postgres.sh                 # no command: an interactive shell
#
# Exported to COMMAND:
#   AF_TEST_PG_URL         postgres://af_test@127.0.0.1:PORT/af_test  (trust auth on loopback)
#   AF_TEST_PG_PW_URL      postgres://af_pw:af_pw_secret@127.0.0.1:PORT/af_test: the one role
#                          that needs a password (so tests can check auth failures); it acts
#                          as af_test once logged in
#   AF_TEST_PG_PORT, AF_TEST_PG_DATA (data dir), AF_TEST_PG_SOCKET_DIR, AF_TEST_PG_PID (postmaster)
#
# Environment:
#   AF_TEST_PG_FAST=1      fsync=off, synchronous_commit=off, full_page_writes=off: speed-only runs;
#                          never for durability tests or benchmarks that claim durability.
#   AF_TEST_PG_VERBOSE=1   print timings and the server log on exit.
#   AF_TEST_PG_BIN         the server binaries (default /usr/lib/postgresql/15/bin).
#
# initdb refuses to run as root: as root the server runs as the system user `postgres` (created
# when missing) through runuser; as any other user it runs as that user.
# shellcheck disable=SC2317  # (file-wide) stop_server and cleanup run from traps
set -euo pipefail

pg_bin=${AF_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
log() { echo "with_postgres: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
t_start=$(now_ms)

for tool in initdb pg_ctl postgres psql; do
  if [[ ! -x $pg_bin/$tool ]]; then
    log "$pg_bin/$tool not found: install postgresql-15 (scripts/deps.sh test)"
    exit 1
  fi
done

# As root, run the server as `postgres`; otherwise as ourselves.
if [[ $(id -u) -eq 0 ]]; then
  if ! id -u postgres >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
  fi
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/af-pg.XXXXXX")
data=$tmp/data
sock=$tmp/sock
server_log=$tmp/server.log
mkdir -p "$sock"
[[ $(id -u) -eq 0 ]] && chown -R postgres: "$tmp"

# Traps do not run on SIGKILL (a ctest timeout kills the process tree): a detached watchdog
# (double-forked, so no longer our descendant) stops the server and removes $tmp once this
# script is gone. A normal exit ends it first.
# shellcheck disable=SC2016  # expanded by the watchdog's bash, not here
watchdog_body='
  while kill -0 "$1" 2>/dev/null; do sleep 1; done
  pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]]; then
    kill -QUIT "$pid" 2>/dev/null || true   # immediate shutdown
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$2"'
(setsid bash -c "$watchdog_body" _ "$$" "$tmp" </dev/null >/dev/null 2>&1 &
  echo $! >"$tmp/watchdog.pid")

# Whatever state we are in (a signal may arrive while pg_ctl is still starting the server),
# a postmaster.pid means there is a server to stop.
stop_server() {
  [[ -f $data/postmaster.pid ]] || return 0
  # Immediate: no shutdown checkpoint (the data is deleted next): ~0.1 s instead of ~2 s.
  (cd "$tmp" && as_pg "$pg_bin/pg_ctl" -D "$data" -m immediate -w -t 20 stop >/dev/null 2>&1) &&
    return 0
  # pg_ctl gives up when the command already killed or broke the server: kill what is left.
  local pid
  pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}

cleanup() {
  local rc=$?
  local t_stop watchdog
  t_stop=$(now_ms)
  watchdog=$(cat "$tmp/watchdog.pid" 2>/dev/null || true)
  [[ $watchdog =~ ^[0-9]+$ ]] && { kill "$watchdog" 2>/dev/null || true; }
  stop_server
  if [[ ${AF_TEST_PG_VERBOSE:-0} == 1 && -f $server_log ]]; then
    echo "----- server log -----" >&2
    cat "$server_log" >&2
  fi
  rm -rf "$tmp"
  if [[ ${AF_TEST_PG_VERBOSE:-0} == 1 ]]; then
    log "stop+cleanup $(($(now_ms) - t_stop)) ms, total $(($(now_ms) - t_start)) ms"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A free ephemeral port from the kernel; a race with other processes is handled by retrying.
free_port() {
  local py=/usr/bin/python3
  [[ -x $py ]] || py=$(command -v python3 || true)
  if [[ -n $py ]]; then
    "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 40000))
  fi
}

(cd "$tmp" && as_pg "$pg_bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=trust \
  -E UTF8 --locale=C.UTF-8 --no-instructions --no-sync >"$tmp/initdb.log" 2>&1) || {
  log "initdb failed:"
  cat "$tmp/initdb.log" >&2
  exit 1
}
# One password role (checked first), everything else trusted: this cluster lives for one run.
{
  echo "host all af_pw 127.0.0.1/32 scram-sha-256"
  cat "$data/pg_hba.conf"
} >"$tmp/pg_hba.conf.new"
[[ $(id -u) -eq 0 ]] && chown postgres: "$tmp/pg_hba.conf.new"
mv "$tmp/pg_hba.conf.new" "$data/pg_hba.conf"

server_opts="-c listen_addresses=127.0.0.1 -k $sock -c max_connections=64"
if [[ ${AF_TEST_PG_FAST:-0} == 1 ]]; then
  server_opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
else
  server_opts+=" -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
fi

port=""
for attempt in 1 2 3 4 5; do
  port=$(free_port)
  rm -f "$server_log"
  if (cd "$tmp" && as_pg "$pg_bin/pg_ctl" -D "$data" -l "$server_log" -w -t 30 \
    -o "$server_opts -p $port" start >/dev/null 2>&1); then
    break
  fi
  if ! grep -qiE "could not (bind|create listen)|address already in use" "$server_log" \
    2>/dev/null; then
    log "the server did not start:"
    cat "$server_log" >&2 2>/dev/null || true
    exit 1
  fi
  log "port $port taken (attempt $attempt), retrying"
  port=""
done
[[ -n $port ]] || { log "no free port after 5 attempts"; exit 1; }

psql_admin() {
  as_pg "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres
}
# af_pw acts as af_test once logged in, so both URLs see (and own) the same tables.
if ! (cd "$tmp" && psql_admin >/dev/null) <<'SQL'; then
CREATE ROLE af_test LOGIN;
CREATE DATABASE af_test OWNER af_test;
CREATE ROLE af_pw LOGIN PASSWORD 'af_pw_secret' IN ROLE af_test;
ALTER ROLE af_pw SET role = 'af_test';
SQL
  log "creating the test role and database failed"
  exit 1
fi

export AF_TEST_PG_URL="postgres://af_test@127.0.0.1:$port/af_test"
export AF_TEST_PG_PW_URL="postgres://af_pw:af_pw_secret@127.0.0.1:$port/af_test"
export AF_TEST_PG_PORT=$port
export AF_TEST_PG_DATA=$data
export AF_TEST_PG_SOCKET_DIR=$sock
AF_TEST_PG_PID=$(head -n 1 "$data/postmaster.pid")
export AF_TEST_PG_PID

if [[ ${AF_TEST_PG_VERBOSE:-0} == 1 ]]; then
  fsync=on
  [[ ${AF_TEST_PG_FAST:-0} == 1 ]] && fsync=off
  log "$AF_TEST_PG_URL ready in $(($(now_ms) - t_start)) ms (fsync $fsync)"
fi

if [[ $# -eq 0 ]]; then
  log "$AF_TEST_PG_URL: interactive shell; exit it to stop the server"
  set -- "${SHELL:-/bin/bash}" -i
fi
set +e
if [[ -t 0 ]]; then
  # A terminal: in the foreground, so Ctrl-C reaches the command (psql cancels its query) and the
  # EXIT trap cleans up when the command ends.
  "$@"
  rc=$?
else
  # In the background with our stdin, so that a TERM (timeout, ctest, kill) sent to this script
  # alone is passed on at once instead of waiting for the command to finish.
  "$@" <&0 &
  child=$!
  trap 'kill -TERM "$child" 2>/dev/null' INT TERM HUP
  wait "$child"
  rc=$?
  while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    rc=$?
  done
fi
set -e
exit "$rc"
