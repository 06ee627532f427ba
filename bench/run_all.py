#!/usr/bin/env python3
"""Runs every benchmark executable of a build and (optionally) rewrites docs/benchmarks.md.

    python3 bench/run_all.py --build build/release --update docs/benchmarks.md

Each executable (<build>/bench/af_bench_*) prints one JSON object per scenario and line
(CONVENTIONS.md, "Benchmarks"); this script echoes those lines on stdout and, with --update,
replaces everything between the markers `<!-- bench:begin -->` and `<!-- bench:end -->` of the
document with the machine, the date, the command and one table per scenario group. With --only,
only the sections (`### ` headings) of the benches run are replaced, each with its own machine,
date and command line; the other sections and the block's preamble are kept as they are. The rest
of the document is left as it is (it is created with a short skeleton when missing).
Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

# Run order, section titles and what each section measures; executables not listed here run
# afterwards in name order.
GROUPS = [
    ("roundtrip", "1. Ask/reply round trip",
     "One agent asks another (`expected<Int64Value> f(context&, const Int64Value&)`) and asks "
     "again from the reply callback; each round trip is timed with `steady_clock` inside the "
     "asker. Baseline: two bare CAF event-based actors doing `request(...).then(...)` with an "
     "`int64_t`. Both on work stealing with 2 threads."),
    ("throughput", "2. One-way throughput",
     "One sender agent tells one receiver agent `Int64Value`s in batches of 1,000 with at most 2 "
     "batches unacknowledged (the receiver acks each full batch), so memory stays bounded. "
     "Baseline: the same protocol between two bare CAF actors sending `int64_t`. p50/p99 are "
     "rates over 2 consecutive acks, i.e. 2,000 messages (p99 = the slow tail)."),
    ("hash", "3. Envelope hash",
     "What `envelope::hash()` computes: `af::append_canonical` into a reused buffer plus "
     "`af::sha256`, vs raw `af::sha256` over the same canonical bytes; `BytesValue` payloads "
     "whose serialization is exactly 64 B, 1 KiB and 16 KiB. Timed in thread CPU time with the "
     "variants alternating block by block (about 1 MiB per block), so other processes on the "
     "machine do not distort the ratio. MB/s counts canonical bytes."),
    ("spawn", "4. Spawning idle agents",
     "100k agents spawned from the main thread through `node::spawn`, timed until every "
     "`on_start` has run (an atomic counter); RSS from `/proc/self/statm` before the first spawn "
     "and after the last start, divided by the count. Baseline: 100k idle bare CAF event-based "
     "actors (handles kept in a vector). Every run of every variant is a fresh process."),
    ("scheduler", "5. Scheduler choice",
     "Agent -> agent ask round trips and thread -> agent round trips (`node::ask` from a plain "
     "thread, as the CLI and HTTP handlers do) on a node with work stealing vs work sharing, "
     "2 threads each (`bench/scheduler_bench.cpp`); the sharing rows carry the stealing figure "
     "of the same run as their baseline."),
    ("restart", "6. Supervision: restarts",
     "`bench/restart_bench.cpp`. Everything is measured inside the actor system (no "
     "foreign-thread round trips), on a node logging at its normal level (`info`, JSON, to a "
     "fresh temporary file per run: like `/dev/null` plus page-cache writes), so the figures "
     "include the restart lines; the notes count the lines written per run. Supervisors run "
     "without backoff (`delay.base = 0`) and with an intensity that is never reached. "
     "**Latency** (`restart.latency.*`): a one_for_one supervisor with one child; a prober agent "
     "takes `ctx.monotonic()`, tells the child to crash (`ctx.fail`, or a handler that throws) "
     "and stops the clock when a *new* instance answers an ask; 2,000 restarts per run after "
     "200 warm-up. Two ways to find the new instance: *poll* (as specified: look the name up and "
     "ask, yielding between attempts by telling itself a message) and *notify* (`.notify`: each "
     "new instance tells the prober its name from `on_start`, then the prober looks it up and "
     "asks). **Sustained** (`restart.sustained*`): a one_for_one supervisor of 1,000 children "
     "that each tell themselves to crash as soon as they start (up to 1,000 crashes in flight); "
     "completed restarts (counted in `recover`) over a 2 s window after 0.5 s warm-up, checked "
     "against the supervisor's own count (`which_children`); p50/p99 are rates over 1,000 "
     "consecutive restarts. **one_for_all** (`restart.one_for_all*`): 1,000 children; the prober "
     "crashes the middle one (`ctx.fail`) and stops the clock when all 1,000 names answer an ask "
     "from new instances (poll: scan all names, yield, scan again; notify: as above); 5 group "
     "restarts per run after 1 warm-up. Baseline: a minimal hand-rolled bare-CAF supervisor (an "
     "event-based actor: `spawn` + `monitor`, respawn on `down_msg`; each child registers its "
     "name in a shared-mutex hash map, like the node's registry, when it starts; for one_for_all it stops the others one at a time in "
     "reverse start order and waits for each `down_msg`, as ours and OTP do, then respawns "
     "all), bare children (`quit(error)` or a throwing handler with a silent exception handler) "
     "and the same probers as bare actors using `request(...).then(...)`; work stealing, 2 "
     "threads. For scale, Erlang/OTP 25 on this machine (reference figures, not measured here): "
     "restart p50 71–255 µs, ~3,600 restarts/s sustained (1,000/s with crash reports logged), "
     "one_for_all of 1,000 children all answering again in 31 ms."),
    ("store", "7. Storage",
     "`bench/store_bench.cpp`, on durable stores only: SQLite with `synchronous=FULL` (WAL) in a "
     "fresh temporary directory per run and, when PostgreSQL 15 is installed, a throwaway server "
     "started by `tests/persistence/with_postgres.sh` (`fsync=on`, `synchronous_commit=on`; "
     "run_all.py runs the bench under it unless `--no-postgres`). **Appends** "
     "(`journal.append.*`): 64 appender agents, each with its own stream, ask the real journal "
     "agent (`af.journal`, a system service of the node started with `store::journal_child`) to "
     "append one event of 100 B, and send the next append when the reply comes (closed loop, 400 "
     "appends each per run); events/s from the first request to the last reply, p50/p99 over "
     "1,024 consecutive replies; the mean batch size comes from `af_journal_batch_size`. "
     "Baseline: the same backend, one single-event request per `append_batch` call (one "
     "transaction and one sync per event), sequentially. `.direct_batch` rows: `append_batch` "
     "with 64 requests per call and no agent, the backend's ceiling for that batch size. **Audit "
     "verify** (`audit.verify.*`): `store::verify_chain` with `store::parallel_verify_options()`, "
     "exactly what `af audit verify` runs (rows checked on every core while the next page is read "
     "from SQLite), over a chain of 200k records of exactly 96, 128 or 256 canonical bytes; wall "
     "time, warm page cache; `.nocols` skips the column check (a Protobuf parse per row), which "
     "`af audit verify` does. Baseline: `af::sha256` over the same bytes (`prev_hash ‖ record`) "
     "in memory on one core (thread CPU time); `audit.verify_per_core.*` divides the verify rate "
     "by the cores used. **Read-back** (`read.*`): a 100k-event stream read in pages of 1,000 "
     "through `af.journal` `ReadRequest`s (`node::ask` from the main thread) vs `backend->read` "
     "on the same store, and `backend->read` vs a raw sqlite3 `SELECT` of the same pages."),
    ("exec", "8. Durable execution (issue 5)",
     "`bench/exec_bench.cpp`. Each run starts a fresh node built as `af run` builds it: "
     "`af.journal` and `af.audit` (detached on SQLite, on the scheduler on the memory store, "
     "whose calls never block) over one store, `af.exec` with the std agents, every "
     "step outcome audited (`exec_options` defaults), work stealing with 2 threads, log level "
     "`warn`; plans compiled with `plan::compile_text`, started with a `StartExecution` ask to "
     "`af.exec` (`wait = true`) after a small warm-up execution. **Chain** (`exec.chain.*`): a "
     "DAG of 10,000 sequential `std.echo` steps (each `after` the previous, its input reading "
     "the previous output); median = ask-to-reply wall time / 10,000; p50/p99 = intervals "
     "between the execution stream's consecutive journal commits (one per step). Stores: "
     "`memory` (memory backends), `sqlite` (`synchronous=FULL`, WAL, a fresh file in a "
     "temporary directory), `sqlite.normal`; `.noaudit` turns `exec_options::audit_steps` off "
     "(only execution start and end are audited then). **Fan-out** "
     "(`exec.fanout.memory*`): `for_each` over 1,000 items of `std.echo`, then a join step "
     "reading every branch's output; ask-to-reply time from the main thread, 5 executions per "
     "run on a warm node, a run's value is their median; `.rss`: peak RSS growth during the "
     "first 1,000-way execution in a fresh process per run (VmHWM reset through "
     "`/proc/self/clear_refs`). **Concurrent** "
     "(`exec.concurrent.*`): one agent starts 100 executions of a 100-step `std.echo` chain at "
     "once (asks with `wait = true`); completed steps / time from the first ask to the last "
     "reply. **Saga** (`exec.saga.*`): the chain as a saga (each step with a `std.echo` "
     "compensation, which the success path never runs), 10,000 steps on `memory`, 1,000 on "
     "`sqlite`; its baseline is the same chain as a dag, run in the same process, interleaved, "
     "so the ratio is the saga's overhead per step; `exec.saga.compensated.memory` adds a last "
     "step that fails, so that every step is undone (per step and its compensation; baseline: "
     "the success path). Other baselines measured in the same run: **store replay**, every `append_batch` and "
     "`audit_append` call the node made for the measured executions (recorded by a backend "
     "decorator until the audit writer has drained, bytes read back afterwards) replayed with "
     "the same batching and order on a fresh store of the same kind (a journal and an audit "
     "connection), back to back from one thread, so the ratio is execution time over store "
     "time; the decorator also times the live `append_batch` calls (notes); **bare CAF** "
     "(`.vs_caf`), "
     "the messages a step needs at the least (a round trip to an event-based actor standing for "
     "the journal, as af.journal runs on the memory store, then one to an event-based actor "
     "standing for `std.echo`, 60 s request timeouts). For scale, the issue quotes a JavaScript agent-graph library at 2 ms per step, "
     "2 s for a 1,000-way fan-out and 10 ms per checkpointed step: those figures were not "
     "measured here."),
    ("sim", "9. Deterministic simulation (issue 6)",
     "`bench/sim_bench.cpp`, one thread. **Deliveries** (`sim.deliveries`): `af::sim::run` on one "
     "simulated node with 1,000 `bench.relay` agents; each starts a token (a "
     "`google.protobuf.UInt64Value`) and every agent passes each token it gets to a random relay "
     "(looked up by name, `ctx.tell`) until the token has made 1,000 hops: 1,000,000 envelopes "
     "handled, each hashed into the trace; value = deliveries / wall time of the whole run "
     "(building the node and its 1,000 agents included). Baseline in the same run: the bare CAF "
     "test coordinator with 1,000 plain event-based actors relaying `uint64_t` tokens the same "
     "way, driven by the same seeded pick-a-runnable-actor loop. Targets: ratio >= 0.7 and "
     ">= 700,000 deliveries/s. **Population** (`sim.population.N`): N idle `sim.worker` agents on "
     "one simulated node (with its journal, audit writer and `af.exec`), 1 s of virtual time, "
     "each run in a fresh process (`--scenario population_once`): peak RSS (VmHWM) of the process; "
     "`bytes_per_agent` = (peak RSS - RSS before the run) / N. Targets: 100,000 agents < 512 MiB, "
     "1,000,000 agents < 4 GiB."),
    ("cluster", "10. Cluster transport (issue 7)",
     "`bench/cluster_bench.cpp`, two processes on loopback (the server is the bench binary "
     "exec'd in server mode, one fresh server per run and variant), both nodes on the default "
     "scheduler (work stealing, 2 threads) with the cluster transport (`cluster.listen`, HMAC "
     "handshake done before timing, no TLS). **Remote ask**: an agent asks an agent on the other "
     "node by address (`ctx.lookup(address{\"srv\", \"echo\"})`, `Int64Value`), one at a time; "
     "20,000 timed round trips after 2,000 warm-up; p50/p99 over round trips. **Throughput**: "
     "the same with 64 asks in flight (asks/s over 40,000 replies; p50/p99 over runs). **One-way**: "
     "one agent tells a remote agent `Int64Value`s in batches of 1,000, each followed by an ask "
     "the remote agent answers with its count, at most 2 batches unacknowledged; the transport "
     "packs the envelopes into MAC'd batch frames on its own TCP connection (length-prefixed, "
     "one I/O thread per node; CAF's middleman is not involved); envelopes/s over 400,000 "
     "after 20,000 warm-up, p50/p99 over 1,000-envelope batches. Baseline: bare CAF actors "
     "published with `middleman().publish` and reached with `remote_actor` (BASP), `int64_t` "
     "request/response and one-way `send` (one BASP message each, `int64_t` payloads without "
     "envelopes, hashes or MACs), same protocol. Targets from "
     "issue 7: remote ask p50 < 100 us, one-way >= 350,000 envelopes/s."),
    ("swim", "11. SWIM membership in the simulator (issue 7)",
     "`bench/swim_bench.cpp`, one thread, virtual time (figures count protocol periods, so they "
     "do not depend on the machine). Each run simulates several seeds of one scenario: N members "
     "with the membership-only node profile (`cluster.profile: membership`), links of 1-10 ms "
     "with **5% message loss**, period 1 s, ping timeout 300 ms, k = 3 indirect probes, "
     "suspicion timeout 4·log10(n+1) periods (at least 2 s), λ = 4, 20 piggy-backed updates at "
     "most, one extra gossip message per period while updates are pending, push-pull sync every "
     "20 periods (20 seeds per run for 100 members, 1 for 1,000). N-1 members join staggered "
     "from 0.5 s through two seeds; once they have settled, the last member joins alone "
     "(**join**: periods from that join until it is alive in every live member's view); then 5 "
     "members crash "
     "for good, 10 s apart (**detect**: periods from the crash to the first suspicion anywhere, "
     "SWIM's detection time; **dead**: until every live member's view has it dead). **False "
     "dead**: distinct (member, incarnation) declarations of a live member as dead while it "
     "was reachable (no partition within the suspicion window), per member-period; **messages**: SWIM messages sent (pings, "
     "acks, ping-reqs, joins, syncs) per member per period. Targets (issue 7): detection within "
     "5 periods at p99, false positives < 0.1% of member-periods, load constant in n."),
    ("raft_sim", "12. Raft leader election in the simulator (issue 8)",
     "`bench/raft_sim_bench.cpp`, one thread, virtual time (the figures depend on the Raft "
     "options and the simulated links, not on the machine). 1,000 seeds per row; each seed runs "
     "N members of `af.cluster.raft` (default options: election timeout 150-300 ms, heartbeat "
     "50 ms) on 1-10 ms links without loss, a writer putting 10 keys/s on each member, and "
     "crashes every member once in turn (down 1.5 s, 3 s apart). A crash that hits the leader "
     "of the moment is timed until another member becomes leader (the simulator's Raft book, "
     "`report.raft.elect_after_crash_ms`); p50/p99 over all such crashes."),
    ("raft", "13. Raft metadata store on 3 processes (issue 8)",
     "`bench/raft_bench.cpp`: three `af node start` processes of the same build on loopback "
     "(`--raft-members n1,n2,n3`, default Raft options, each with its own SQLite journal under a "
     "fresh data directory: the durable log), and the bench process as a fourth node on the "
     "cluster transport (HMAC, no TLS), a fresh cluster per run. 64 clients, each with one "
     "`MetaPut` in flight on its own session (client id, sequence number), ask the leader "
     "(found with `RaftStatusRequest`) directly; a reply means the command is in a majority's "
     "journal and applied by the leader. Commits/s over the run after a warm-up; latency per "
     "command under that load (p50 is the median of the runs' p50s). Baseline in the same run "
     "and cluster: the same 64 clients asking the leader's `af.cluster.raft` for its "
     "`RaftStatus` (transport and agent, no consensus, no disk). Targets (issue 8): >= 20,000 "
     "commits/s, p50 < 2 ms. All four processes share the machine's 2 cores."),
]

SKELETON = f"""# Benchmarks

How to run: `make bench` (builds the release preset, then runs
`python3 bench/run_all.py --build build/release --update docs/benchmarks.md`).

{BEGIN}
{END}
"""


def find_benches(build: pathlib.Path) -> list[pathlib.Path]:
    bench_dir = build / "bench"
    found = sorted(p for p in bench_dir.glob("af_bench_*")
                   if p.is_file() and os.access(p, os.X_OK))
    order = {g[0]: i for i, g in enumerate(GROUPS)}
    return sorted(found, key=lambda p: (order.get(group_of(p), len(order)), p.name))


def group_of(exe: pathlib.Path) -> str:
    return exe.name[len("af_bench_"):]


REPO = pathlib.Path(__file__).resolve().parent.parent
WITH_POSTGRES = REPO / "tests" / "persistence" / "with_postgres.sh"
PG_BIN = pathlib.Path(os.environ.get("AF_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def wrapper(exe: pathlib.Path, postgres: bool) -> list[str]:
    """The storage bench runs under a throwaway PostgreSQL server (with_postgres.sh exports
    AF_TEST_PG_URL) when one can be started and none is given; durability stays on (no
    AF_TEST_PG_FAST)."""
    if group_of(exe) != "store" or not postgres or os.environ.get("AF_TEST_PG_URL"):
        return []
    if not WITH_POSTGRES.exists() or not (PG_BIN / "initdb").exists():
        print("run_all.py: PostgreSQL 15 not installed: the storage bench runs on SQLite only",
              file=sys.stderr)
        return []
    return [str(WITH_POSTGRES)]


def run_bench(exe: pathlib.Path, extra: list[str],
              prefix: list[str] | None = None) -> tuple[list[dict], float]:
    start = time.monotonic()
    env = dict(os.environ)
    env.pop("AF_TEST_PG_FAST", None)  # durability figures: never on a non-durable server
    proc = subprocess.Popen([*(prefix or []), str(exe), *extra], stdout=subprocess.PIPE,
                            text=True, env=env)
    rows = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if not line.startswith("{"):
            continue
        print(line, flush=True)
        rows.append(json.loads(line))
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"{exe.name} exited with status {rc}")
    return rows, time.monotonic() - start


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat), 0..1."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0]
                  .split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle
    try:
        t1, i1 = sample()
        time.sleep(interval)
        t2, i2 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 0.0 if t2 == t1 else 1.0 - (i2 - i1) / (t2 - t1)


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Waits (up to max_wait seconds) until other processes leave the CPUs idle; returns the
    busy fraction seen last. Wall-clock benches on 2 cores are meaningless next to a compiler."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = cpu_busy(2.0)
    return busy


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    a = abs(v)
    if a >= 10000 or (a >= 100 and float(v).is_integer()):
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:,.1f}"
    elif a >= 10:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3g}"
    return s


UNIT_TEXT = {"us": "µs"}


def cell(side: dict, key: str) -> str:
    return fmt(side.get(key))


def median_cell(side: dict) -> str:
    text = f"{fmt(side['median'])} {UNIT_TEXT.get(side['unit'], side['unit'])}"
    if "mb_s" in side:
        text += f" ({fmt(side['mb_s'])} MB/s)"
    return text


def target_text(row: dict) -> tuple[str, str]:
    t = row.get("target")
    if not t:
        return "informational", "–"
    if not isinstance(t, dict):  # free text, e.g. "informational"
        return str(t), "–"
    op = {"<=": "≤", ">=": "≥"}.get(t["op"], t["op"])
    what = "ratio" if t["metric"] == "ratio" else UNIT_TEXT.get(row["unit"], row["unit"])
    if t["metric"] == "ratio":
        text = f"ratio {op} {fmt(t['value'])}"
    elif t["metric"] == "p99":
        text = f"p99 {op} {fmt(t['value'])} {what}"
    else:
        text = f"{op} {fmt(t['value'])} {what}"
    return text, ("**yes**" if row.get("met") else "**no**")


def table(rows: list[dict]) -> list[str]:
    out = [
        "| Measurement | Variant | Median | p50 | p99 | Min | Max | n | Ratio | Target | Met |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for row in rows:
        target, met = target_text(row)
        ratio = fmt(row.get("ratio")) if "ratio" in row else "–"
        label = f"{row['title']} (`{row['name']}`)" if row.get("title") else f"`{row['name']}`"
        out.append(f"| {label} | {row.get('variant', 'AgentFlow')} | "
                   f"{median_cell(row)} | {cell(row, 'p50')} | {cell(row, 'p99')} | "
                   f"{cell(row, 'min')} | {cell(row, 'max')} | {row['n']:,} | {ratio} | "
                   f"{target} | {met} |")
        base = row.get("baseline")
        if base:
            out.append(f"| | baseline: {base.get('name', 'same run')} | {median_cell(base)} | "
                       f"{cell(base, 'p50')} | {cell(base, 'p99')} | {cell(base, 'min')} | "
                       f"{cell(base, 'max')} | {base['n']:,} | | | |")
    notes = [f"`{r['name']}`: {r['note']}" for r in rows if r.get("note")]
    if notes:
        out.append("")
        out.extend(f"- {n}" for n in notes)
    return out


def targets_met(rows: list[dict]) -> tuple[int, int]:
    with_target = [r for r in rows if isinstance(r.get("target"), dict)]
    return sum(1 for r in with_target if r.get("met")), len(with_target)


def section(group: str, rows: list[dict], provenance: str | None = None) -> str:
    """One group's section: heading, what it measures, (for a partial run) where and when it was
    measured, and its table."""
    titles = {g[0]: g[1] for g in GROUPS}
    about = {g[0]: g[2] for g in GROUPS}
    lines = [f"### {titles.get(group, group)}", ""]
    if group in about:
        lines += [about[group], ""]
    if provenance:
        lines += [provenance, ""]
    lines += table(rows)
    lines.append("")
    return "\n".join(lines)


def render(results: dict[str, list[dict]], timings: dict[str, float], busy: dict[str, float],
           command: str, load_before: str) -> str:
    met, total = targets_met([r for rows in results.values() for r in rows])
    lines = [
        f"Measured on a {os.cpu_count()}-core machine ({cpu_model()}), "
        f"date {datetime.date.today().isoformat()}; load average before the run: {load_before}.",
        "",
        f"- Machine: `nproc` = {os.cpu_count()}, CPU `{cpu_model()}`, "
        f"{platform.system()} {platform.release()}",
        f"- Command: `{command}`",
        "- Bench wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        + f" (total {sum(timings.values()):.1f} s)",
        "- CPUs busy with other processes just before each bench: "
        + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()),
        f"- Targets met: {met} of {total}",
        "",
    ]
    for group, rows in results.items():
        lines.append(section(group, rows))
    return "\n".join(lines)


def provenance(group: str, rows: list[dict], secs: float, busy: float, command: str,
               load_before: str) -> str:
    """The machine, date and command of a section measured on its own (`--only`)."""
    met, total = targets_met(rows)
    return (f"*Measured separately from the other sections:* {os.cpu_count()}-core machine "
            f"({cpu_model()}, {platform.system()} {platform.release()}), date "
            f"{datetime.date.today().isoformat()}; load average before the run: {load_before}; "
            f"command `{command}`; bench wall time {secs:.1f} s; CPUs busy with other processes "
            f"just before: {busy:.0%}; targets met in this section: {met} of {total}.")


def read_block(path: pathlib.Path) -> tuple[str, str, str]:
    """(text before and including BEGIN, the block between the markers, END and the rest)."""
    text = path.read_text() if path.exists() else SKELETON
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    return head + BEGIN, block, END + tail


def update_doc(path: pathlib.Path, body: str) -> None:
    head, _, tail = read_block(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}\n{body.rstrip()}\n{tail}")


def split_sections(block: str) -> tuple[str, list[tuple[str, str]]]:
    """The block's preamble and its `### ` sections as (heading text, section text)."""
    parts = block.split("\n### ")
    preamble, sections = parts[0], []
    if block.startswith("### "):  # no preamble at all
        preamble, parts = "", ["", block[len("### "):], *parts[1:]]
    for p in parts[1:]:
        heading = p.split("\n", 1)[0].strip()
        sections.append((heading, "### " + p))
    return preamble, sections


def update_doc_sections(path: pathlib.Path, new: dict[str, str]) -> None:
    """Replaces only the sections of the groups in `new` (adding those that are missing, in
    GROUPS order) and keeps the preamble and every other section byte for byte."""
    head, block, tail = read_block(path)
    preamble, sections = split_sections(block)
    titles = {g[1]: g[0] for g in GROUPS}
    existing = {titles.get(h, h): text for h, text in sections}
    order = [g[0] for g in GROUPS]
    keys = [titles.get(h, h) for h, _ in sections]
    # Known groups in GROUPS order; sections of unknown groups stay after them, in their order.
    merged_keys = [k for k in order if k in existing or k in new]
    merged_keys += [k for k in keys if k not in merged_keys]
    merged_keys += [k for k in new if k not in merged_keys]
    out = [preamble.strip("\n")]
    for k in merged_keys:
        out.append((new[k] if k in new else existing[k]).rstrip("\n"))
    body = "\n\n".join(s for s in out if s)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}\n{body}\n{tail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True, help="CMake build directory (e.g. build/release)")
    ap.add_argument("--update", metavar="DOC", help="rewrite the tables of this Markdown file")
    ap.add_argument("--only", action="append", default=[],
                    help="run only these benches (roundtrip, throughput, hash, spawn, scheduler, restart, store, exec, sim, cluster, swim, raft_sim, raft); with --update only their sections are replaced, the others are kept as they are")
    ap.add_argument("--no-postgres", action="store_true",
                    help="run the storage bench on SQLite only (default: also on a throwaway "
                         "PostgreSQL server, tests/persistence/with_postgres.sh, when installed)")
    ap.add_argument("--runs", type=int, help="override the number of runs of every bench")
    ap.add_argument("--wait-idle", type=float, default=60, metavar="SECONDS",
                    help="before each bench, wait up to this long for the CPUs to be idle "
                         "(default 60; 0: do not wait)")
    args = ap.parse_args()

    build = pathlib.Path(args.build)
    benches = find_benches(build)
    if args.only:
        benches = [b for b in benches if group_of(b) in args.only]
    if not benches:
        print(f"run_all.py: no af_bench_* executables in {build / 'bench'} "
              f"(configure with -DAF_BUILD_BENCH=ON and build)", file=sys.stderr)
        return 1

    extra = ["--runs", str(args.runs)] if args.runs else []
    load_before = load_average()
    busy: dict[str, float] = {}
    results: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    for exe in benches:
        busy[group_of(exe)] = b = wait_for_quiet(args.wait_idle) if args.wait_idle > 0 else \
            cpu_busy()
        if b > 0.15:
            print(f"run_all.py: warning: other processes keep {b:.0%} of the CPUs busy; "
                  f"{exe.name}'s wall-clock figures will be noisy", file=sys.stderr)
        print(f"# {exe.name} (CPUs {b:.0%} busy before it)", file=sys.stderr, flush=True)
        try:
            rows, secs = run_bench(exe, extra, wrapper(exe, not args.no_postgres))
        except (RuntimeError, json.JSONDecodeError) as e:
            print(f"run_all.py: {e}", file=sys.stderr)
            return 1
        results[group_of(exe)] = rows
        timings[group_of(exe)] = secs

    if args.update:
        command = "python3 bench/run_all.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if args.only:
            # A subset: replace only its sections, each with its own machine/date/command line.
            update_doc_sections(pathlib.Path(args.update), {
                g: section(g, rows, provenance(g, rows, timings[g], busy[g], command,
                                               load_before))
                for g, rows in results.items()})
        else:
            update_doc(pathlib.Path(args.update),
                       render(results, timings, busy, command, load_before))
        print(f"# updated {args.update}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
