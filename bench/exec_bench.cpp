// Scenario 8: durable plan execution (issue 5). Every execution runs on a node built as `af run`
// builds it: af.journal and af.audit (system services; detached on SQLite, on the scheduler on
// the memory store, whose calls never block) over one store, af.exec with the
// std agents, executors auditing every step outcome (exec_options defaults); only the log level is
// raised to warn. Plans are compiled with plan::compile_text and started with a StartExecution ask
// to af.exec (wait = true).
//
//  exec.chain.<store>  a DAG of N sequential std.echo steps (each `after` the previous one, its
//      input reading the previous output): wall time from the StartExecution ask to its reply,
//      divided by N. Samples (p50/p99) are the intervals between the execution's consecutive
//      journal commits (one per step), timed inside the store (see recording_backend).
//      Stores: memory (memory backends, as `--store memory:`), sqlite (synchronous=FULL, WAL, a
//      fresh file in a temporary directory), sqlite.normal (synchronous=NORMAL).
//      .noaudit: exec_options::audit_steps = false (execution start and end are still audited).
//  exec.fanout.memory  a for_each over N items of std.echo, then a join step reading every
//      branch's output (a barrier): ask-to-reply time of one execution; 5 per run on a warm node,
//      the run's value is their median (.noaudit: audit_steps = false). exec.fanout.memory.rss:
//      in a fresh process per run (this executable, --scenario fanout_rss_once), the peak RSS
//      growth during the first N-way execution after a 10-item warm-up (VmHWM after a reset
//      through /proc/self/clear_refs, minus the RSS before), with the bytes allocated through
//      operator new during it in the note.
//  exec.saga.<store>  a saga of N sequential std.echo steps (step k reads step k-1's output, each
//      with a std.echo compensation, which the success path never runs): wall time per step, as
//      exec.chain; baseline: the same chain as a dag (exec.chain's plan), run in the same
//      process, interleaved; the ratio is the saga's overhead per step. Stores: memory (10,000
//      steps), sqlite (synchronous=FULL, 1,000 steps).
//  exec.saga.compensated.memory  the same saga plus a last step that fails (std.fail, not
//      retried), so that all N steps are compensated: wall time / N (a step and its
//      compensation); baseline: the success path of the same saga.
//  exec.concurrent.<store>  E executions of a C-step std.echo chain started at once by one agent
//      (E asks to af.exec with wait = true): completed steps over the time from the first ask to
//      the last reply. sqlite (FULL) carries the target; sqlite.noaudit, sqlite.normal, memory
//      and memory.noaudit are for comparison.
//
// Baselines, measured in the same run (interleaved with the runs of the execution):
//  store replay  every append_batch and audit_append call the node made for the measured
//      executions (from the first start until the audit writer has drained), recorded (stream,
//      expected version, event count; audit row count) by a backend decorator and replayed with the
//      same events and rows read back from the store, with the same batching, on a fresh store of
//      the same kind and settings (a journal connection and an audit connection), in the recorded
//      order, back to back from one thread: what the writes cost without agents, messages and
//      planning; the ratio is execution / store. The decorator also times the live append_batch
//      calls (in the notes).
//  bare CAF      the messages a step needs at the least: an event-based actor asks an actor
//      standing for af.journal (event-based, as af.journal is on the memory store) and then an
//      event-based actor (standing for std.echo), both with a request timeout (60 s), per step
//      (chain); for the fan-out one journal round trip, N concurrent echo requests, one journal
//      round trip, one echo request, one journal round trip.
//
//   af_bench_exec [--runs 5] [--scenario chain_memory|chain_sqlite|fanout_memory|concurrent_sqlite
//                 |saga_memory|saga_sqlite] (default: all) [--steps 10000] [--fanout 1000]
//                 [--executions 100] [--chain 100] (steps per concurrent execution)
//                 [--audit both|on|off] [--floor 1|0] (chain_memory: both rows, or only the
//                 audited or the .noaudit one; 0: without the bare-CAF floor; for profilers)
//                 [--saga-steps 10000] [--saga-sqlite-steps 1000]
#include "bench_common.hpp"
#include "bench_systems.hpp"

#include "af/agent.hpp"
#include "af/node.hpp"
#include "af/plan/agents.hpp"
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"
#include "af/store/audit.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/exec.pb.h"
#include "af/v1/store.pb.h"

#include <google/protobuf/wrappers.pb.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace store = af::store;
namespace plan = af::plan;
namespace v1 = af::v1;

// --- allocation counting (the fan-out's allocated bytes) -----------------------------------------

namespace {

using bench::die;
using bench::process_cpu_seconds;
std::atomic<bool> g_count_allocs{false};
std::atomic<std::uint64_t> g_alloc_bytes{0};
std::atomic<std::uint64_t> g_alloc_calls{0};
} // namespace

// Replaces the global operator new of the process (the shared libraries' calls included); counts
// only while g_count_allocs is set. The library's operator delete (free) releases what it returns.
void* operator new(std::size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) {
    g_alloc_bytes.fetch_add(n, std::memory_order_relaxed);
    g_alloc_calls.fetch_add(1, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc{};
}
void* operator new[](std::size_t n) { return ::operator new(n); }

namespace {

// --- the store under test and the recording decorator -------------------------------------------

/// "memory", or "sqlite" with a synchronous setting.
struct store_spec {
  std::string kind = "memory";
  std::string synchronous = "FULL";

  [[nodiscard]] std::string suffix() const {
    if (kind == "memory") return "memory";
    return synchronous == "FULL" ? "sqlite" : "sqlite." + lower(synchronous);
  }
  [[nodiscard]] std::string describe() const {
    if (kind == "memory") return "in-memory store (memory backends)";
    return "SQLite synchronous=" + synchronous + " (WAL), a fresh file in a temporary directory";
  }
  static std::string lower(std::string s) {
    for (auto& c : s)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
};

/// A fresh store: opens a new memory backend on every call, or a connection to one SQLite file.
struct store_instance {
  store_spec spec;
  std::unique_ptr<bench::temp_dir> dir;

  explicit store_instance(store_spec s) : spec(std::move(s)) {
    if (spec.kind == "sqlite") dir = std::make_unique<bench::temp_dir>("af-bench-exec");
  }
  [[nodiscard]] std::unique_ptr<store::backend> open() const {
    if (spec.kind == "memory") return store::make_memory_backend();
    store::sqlite_options so;
    so.path = dir->db();
    so.synchronous = spec.synchronous;
    auto db = store::open_sqlite(so);
    if (!db) die("open sqlite: " + db.error().to_string());
    return std::move(*db);
  }
};

/// What one append_batch / audit_append call of the node wrote, without the bytes (those are
/// read back from the store afterwards).
struct request_meta {
  std::string stream;
  std::string tenant;
  std::uint64_t expected_version = 0;
  std::uint32_t events = 0;
  bool finish = false;
};
struct call_record {
  std::int64_t at_ns = 0; ///< steady_clock at the call's start
  std::int64_t took_ns = 0;
  bool audit = false;
  std::vector<request_meta> requests; ///< journal calls
  std::uint64_t first_seq = 0;        ///< audit calls
  std::uint32_t rows = 0;
};

/// The calls of one node, and the backends they went to (kept alive for the read-back).
struct recorder {
  std::mutex mtx;
  std::vector<call_record> calls;
  std::shared_ptr<store::backend> journal_db, audit_db;

  [[nodiscard]] std::vector<call_record> snapshot() {
    std::lock_guard g{mtx};
    return calls;
  }
};

std::int64_t steady_ns() { return bench::clock::now().time_since_epoch().count(); }

/// Forwards every call to the real backend; notes the journal appends and audit appends. Costs a
/// clock read and a few small copies per commit, on the store agent's thread.
class recording_backend final : public store::backend {
public:
  recording_backend(std::shared_ptr<store::backend> inner, std::shared_ptr<recorder> rec)
      : inner_(std::move(inner)), rec_(std::move(rec)) {}

  [[nodiscard]] std::string_view kind() const noexcept override { return inner_->kind(); }
  [[nodiscard]] const std::string& location() const noexcept override { return inner_->location(); }
  std::vector<af::expected<store::append_result>>
  append_batch(std::span<const store::append_request> batch, af::time_point now) override {
    call_record c;
    c.at_ns = steady_ns();
    c.requests.reserve(batch.size());
    for (const auto& r : batch)
      c.requests.push_back({r.stream, r.tenant, r.expected_version,
                            static_cast<std::uint32_t>(r.events.size()), r.finish});
    auto out = inner_->append_batch(batch, now);
    c.took_ns = steady_ns() - c.at_ns;
    std::lock_guard g{rec_->mtx};
    rec_->calls.push_back(std::move(c));
    return out;
  }
  af::expected<std::vector<store::event_record>>
  read(std::string_view stream, std::uint64_t from_version, std::size_t max) override {
    return inner_->read(stream, from_version, max);
  }
  af::expected<std::uint64_t> version(std::string_view stream) override {
    return inner_->version(stream);
  }
  af::expected<std::vector<store::stream_info>> list_streams(std::string_view prefix,
                                                             std::string_view tenant,
                                                             std::string_view after,
                                                             std::size_t max) override {
    return inner_->list_streams(prefix, tenant, after, max);
  }
  af::expected<std::optional<store::stream_info>> stream(std::string_view stream) override {
    return inner_->stream(stream);
  }
  af::expected<store::compact_result> compact(const store::compact_options& opts) override {
    return inner_->compact(opts);
  }
  af::expected<std::uint64_t> storage_bytes() override { return inner_->storage_bytes(); }
  af::status save_snapshot(const store::snapshot_record& s) override {
    return inner_->save_snapshot(s);
  }
  af::expected<std::optional<store::snapshot_record>>
  load_snapshot(std::string_view stream) override {
    return inner_->load_snapshot(stream);
  }
  af::expected<store::audit_head> audit_last() override { return inner_->audit_last(); }
  af::status audit_append(std::span<const store::audit_row> rows) override {
    call_record c;
    c.at_ns = steady_ns();
    c.audit = true;
    c.rows = static_cast<std::uint32_t>(rows.size());
    c.first_seq = rows.empty() ? 0 : rows.front().seq;
    auto st = inner_->audit_append(rows);
    c.took_ns = steady_ns() - c.at_ns;
    if (st) {
      std::lock_guard g{rec_->mtx};
      rec_->calls.push_back(std::move(c));
    }
    return st;
  }
  af::expected<std::vector<store::audit_row>> audit_read(std::uint64_t from_seq,
                                                         std::size_t max) override {
    return inner_->audit_read(from_seq, max);
  }
  af::status audit_scan(std::uint64_t from_seq, std::size_t max,
                        const std::function<bool(const store::audit_row_view&)>& fn) override {
    return inner_->audit_scan(from_seq, max, fn);
  }
  af::expected<int> schema_version() override { return inner_->schema_version(); }
  [[nodiscard]] int latest_schema_version() const noexcept override {
    return inner_->latest_schema_version();
  }
  af::status migrate_to(int target) override { return inner_->migrate_to(target); }

private:
  std::shared_ptr<store::backend> inner_;
  std::shared_ptr<recorder> rec_;
};

// --- the node
// -------------------------------------------------------------------------------------

struct exec_node {
  std::shared_ptr<recorder> rec = std::make_shared<recorder>();
  std::unique_ptr<af::node> n;

  exec_node(const store_instance& si, bool audit_steps) {
    af::node::options opt; // cfg = af::config::defaults(): work stealing, 2 threads
    af::log_options lo;
    lo.level = af::log_level::warn;
    lo.format = "text";
    if (auto backend = af::make_log_backend(lo)) opt.log = *backend;
    // Each service opens its own connection, kept in the recorder (`slot`) for the replay.
    auto recorded_open = [&si, r = rec](std::shared_ptr<store::backend> recorder::*slot) {
      return [&si, r, slot]() -> af::expected<std::unique_ptr<store::backend>> {
        std::shared_ptr<store::backend> db = si.open();
        {
          std::lock_guard g{r->mtx};
          (*r).*slot = db;
        }
        return std::unique_ptr<store::backend>{std::make_unique<recording_backend>(db, r)};
      };
    };
    store::journal_options jo;
    jo.open = recorded_open(&recorder::journal_db);
    jo.blocking = si.spec.kind != "memory"; // as store::journal_options_from sets it
    opt.system_services.push_back(store::journal_child(std::move(jo)));
    store::audit_options ao;
    ao.open = recorded_open(&recorder::audit_db);
    ao.blocking = jo.blocking;
    opt.system_services.push_back(store::audit_child(std::move(ao)));
    auto agents = std::make_shared<plan::agent_types>();
    if (auto st = plan::add_std_agents(*agents, {}); !st)
      die("std agents: " + st.error().to_string());
    plan::exec_options eo;
    eo.agents = agents;
    eo.audit_steps = audit_steps;
    opt.system_services.push_back(plan::exec_child(std::move(eo)));
    auto started = af::node::start(std::move(opt));
    if (!started) die("node start failed: " + started.error().to_string());
    n = std::move(*started);
    // The journal opens its store in on_start; wait until it answers.
    v1::ReadRequest ping;
    ping.set_stream("bench/none");
    for (int i = 0; !n->ask<v1::ReadResult>(store::k_journal_agent, ping, 5s); ++i) {
      if (i == 500) die("the journal agent did not become ready");
      std::this_thread::sleep_for(10ms);
    }
  }
  exec_node(const exec_node&) = delete;
  exec_node& operator=(const exec_node&) = delete;
  ~exec_node() {
    if (n) n->shutdown();
  }

  /// Runs one execution to its end (StartExecution with wait = true); dies unless it ended with
  /// status `want` (completed) and `steps` completed steps.
  v1::ExecutionInfo run(const v1::PlanIR& p, const std::string& inputs, std::uint64_t steps,
                        v1::ExecStatus want = v1::EXEC_COMPLETED) {
    v1::StartExecution s;
    *s.mutable_plan() = p;
    s.set_inputs_json(inputs);
    s.set_wait(true);
    s.set_by("bench");
    auto r = n->ask<v1::ExecutionInfo>(plan::k_exec_agent, std::move(s), 600s);
    if (!r) die("execution: " + r.error().to_string());
    if (r->status() != want || r->steps_completed() != steps)
      die("execution " + r->execution_id() + " ended with status " + std::to_string(r->status())
          + ", " + std::to_string(r->steps_completed()) + " steps completed (expected "
          + std::to_string(steps) + "): " + r->error());
    return *r;
  }

  /// Waits until the audit writer has committed everything asked of it (no new audit rows for
  /// 300 ms, at most 120 s); returns the steady time (ns) at which its last commit ended.
  std::int64_t wait_audit_drained() {
    auto state = [&] {
      std::uint64_t rows = 0;
      std::int64_t last = 0;
      std::lock_guard g{rec->mtx};
      for (const auto& c : rec->calls)
        if (c.audit) {
          rows += c.rows;
          last = std::max(last, c.at_ns + c.took_ns);
        }
      return std::pair{rows, last};
    };
    auto prev = state();
    for (int i = 0; i < 400; ++i) {
      std::this_thread::sleep_for(300ms);
      auto now = state();
      if (now.first == prev.first) return now.second;
      prev = now;
    }
    die("the audit writer did not drain in 120 s");
  }

  /// Stops the node; the recorded calls and the backends stay readable.
  void stop() {
    if (n) n->shutdown();
    n.reset();
  }
};

// --- plans
// ------------------------------------------------------------------------------------------

v1::PlanIR compile(const std::string& yaml, const std::string& name) {
  auto p = plan::compile_text(yaml, name);
  if (!p) die("compile " + name + ": " + p.error().to_string());
  return *p;
}

/// N sequential std.echo steps; step k reads step k-1's output.
std::string chain_yaml(std::size_t n) {
  std::ostringstream y;
  y << "apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: bench-chain}\nspec:\n"
       "  type: dag\n  steps:\n    - id: s0\n      agent: std.echo\n      input: {n: 0}\n";
  for (std::size_t k = 1; k < n; ++k)
    y << "    - id: s" << k << "\n      agent: std.echo\n      input: {n: " << k
      << ", prev: \"${steps.s" << k - 1 << ".output.n}\"}\n      after: [s" << k - 1 << "]\n";
  return y.str();
}

/// The chain of chain_yaml as a saga: each step also names a std.echo compensation reading its
/// output; with `fail_last`, a last step that fails for good, so that every step is undone.
std::string saga_yaml(std::size_t n, bool fail_last) {
  std::ostringstream y;
  y << "apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: bench-saga}\nspec:\n"
       "  type: saga\n  steps:\n";
  for (std::size_t k = 0; k < n; ++k) {
    y << "    - id: s" << k << "\n      agent: std.echo\n      input: {n: " << k;
    if (k > 0) y << ", prev: \"${steps.s" << k - 1 << ".output.n}\"";
    y << "}\n      compensate: {agent: std.echo, input: {undo: \"${steps.s" << k
      << ".output.n}\"}}\n";
  }
  if (fail_last)
    y << "    - id: fail\n      agent: std.fail\n      input: {always: true, kind: validation}\n"
         "      compensate: none\n";
  return y.str();
}

/// A for_each over inputs.items of std.echo, then a join step reading every branch's output.
std::string fanout_yaml() {
  return "apiVersion: agentflow/v1\nkind: Plan\nmetadata: {name: bench-fanout}\nspec:\n"
         "  type: dag\n  inputs:\n    items: {required: true}\n  steps:\n"
         "    - id: fan\n      for_each: \"${inputs.items}\"\n      agent: std.echo\n"
         "      input: {item: \"${item}\"}\n"
         "    - id: join\n      agent: std.echo\n      input: {all: \"${steps.fan.output}\"}\n"
         "      after: [fan]\n";
}

std::string items_json(std::size_t n) {
  std::string s = "{\"items\":[";
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0) s += ',';
    s += std::to_string(i);
  }
  return s + "]}";
}

// --- store replay baseline ----------------------------------------------------------------------

/// The recorded calls with their bytes read back, ready to replay.
struct replay_call {
  std::int64_t at_ns = 0;
  std::vector<store::append_request> journal; ///< empty for an audit call
  std::vector<store::audit_row> rows;
};

std::vector<replay_call> rebuild(recorder& rec) {
  auto calls = rec.snapshot();
  std::sort(calls.begin(), calls.end(),
            [](const call_record& a, const call_record& b) { return a.at_ns < b.at_ns; });
  std::map<std::string, std::vector<store::event_record>> streams;
  std::map<std::string, std::size_t> cursor;
  std::vector<store::audit_row> audit_rows;
  bool audit_read = false;
  std::vector<replay_call> out;
  out.reserve(calls.size());
  for (const auto& c : calls) {
    replay_call rc;
    rc.at_ns = c.at_ns;
    if (c.audit) {
      if (!audit_read) {
        auto rows = rec.audit_db->audit_read(1, 100'000'000);
        if (!rows) die("read back audit: " + rows.error().to_string());
        audit_rows = std::move(*rows);
        audit_read = true;
      }
      if (c.first_seq == 0 || c.first_seq - 1 + c.rows > audit_rows.size())
        die("read back audit: rows missing");
      rc.rows.assign(audit_rows.begin() + static_cast<std::ptrdiff_t>(c.first_seq - 1),
                     audit_rows.begin() + static_cast<std::ptrdiff_t>(c.first_seq - 1 + c.rows));
      out.push_back(std::move(rc));
      continue;
    }
    for (const auto& m : c.requests) {
      auto it = streams.find(m.stream);
      if (it == streams.end()) {
        auto ev = rec.journal_db->read(m.stream, 1, 100'000'000);
        if (!ev) die("read back " + m.stream + ": " + ev.error().to_string());
        it = streams.emplace(m.stream, std::move(*ev)).first;
      }
      auto& pos = cursor[m.stream];
      if (pos + m.events > it->second.size()) die("read back " + m.stream + ": events missing");
      store::append_request r;
      r.stream = m.stream;
      r.tenant = m.tenant;
      r.expected_version = m.expected_version;
      r.finish = m.finish;
      for (std::uint32_t k = 0; k < m.events; ++k, ++pos) {
        const auto& e = it->second[pos];
        r.events.push_back({e.type, e.payload, e.envelope_hash});
      }
      rc.journal.push_back(std::move(r));
    }
    out.push_back(std::move(rc));
  }
  return out;
}

constexpr std::int64_t k_forever = std::numeric_limits<std::int64_t>::max();

constexpr const char* k_replay_name =
    "store replay: the same journal and audit writes, same batching, fresh store, one thread, "
    "no agents";

struct replay_result {
  double seconds = 0; ///< store time of the timed calls
  double journal_seconds = 0;
  double audit_seconds = 0;
  std::size_t journal_calls = 0;
  std::size_t journal_requests = 0;
  std::size_t audit_calls = 0;
  std::size_t journal_events = 0;
  std::size_t journal_bytes = 0; ///< type + payload of the journal events
  std::size_t audit_rows = 0;
};

void replay_call_on(store::backend& journal, store::backend& audit, const replay_call& c) {
  const af::time_point now{std::chrono::nanoseconds{1}};
  if (c.journal.empty()) {
    if (auto st = audit.audit_append(c.rows); !st)
      die("replay audit_append: " + st.error().to_string());
    return;
  }
  for (auto& r : journal.append_batch(c.journal, now))
    if (!r) die("replay append_batch: " + r.error().to_string());
}

/// Replays `calls` on a fresh store of `spec` with a journal connection and an audit connection,
/// as the node has, in their recorded order from one thread: the calls before `from_ns`
/// untimed, the others timed. One thread because SQLite takes one writer at a time anyway (and
/// two back-to-back writers starve each other behind its busy handler: tried, the audit
/// connection timed out).
replay_result replay(const std::vector<replay_call>& calls, const store_spec& spec,
                     std::int64_t from_ns, std::int64_t to_ns) {
  store_instance si{spec};
  auto journal = si.open();
  auto audit = si.open();
  replay_result out;
  for (const auto& c : calls) {
    if (c.at_ns < from_ns) {
      replay_call_on(*journal, *audit, c);
      continue;
    }
    if (c.at_ns > to_ns) continue;
    const auto t0 = bench::clock::now();
    replay_call_on(*journal, *audit, c);
    const auto took = bench::seconds_between(t0, bench::clock::now());
    out.seconds += took;
    if (c.journal.empty()) {
      ++out.audit_calls;
      out.audit_seconds += took;
      out.audit_rows += c.rows.size();
      continue;
    }
    ++out.journal_calls;
    out.journal_seconds += took;
    out.journal_requests += c.journal.size();
    for (const auto& r : c.journal)
      for (const auto& e : r.events) {
        ++out.journal_events;
        out.journal_bytes += e.type.size() + e.payload.size();
      }
  }
  return out;
}

/// Time the live journal spent in append_batch during the window (measured in the decorator).
double live_journal_seconds(const std::vector<call_record>& calls, std::int64_t from_ns,
                            std::int64_t to_ns) {
  double s = 0;
  for (const auto& c : calls)
    if (!c.audit && c.at_ns >= from_ns && c.at_ns <= to_ns)
      s += static_cast<double>(c.took_ns) * 1e-9;
  return s;
}

/// Journal commits of `stream` that started in the window: their start times (ns).
std::vector<std::int64_t> commits_of(const std::vector<call_record>& calls,
                                     const std::string& stream, std::int64_t from_ns,
                                     std::int64_t to_ns) {
  std::vector<std::int64_t> out;
  for (const auto& c : calls) {
    if (c.audit || c.at_ns < from_ns || c.at_ns > to_ns) continue;
    for (const auto& r : c.requests)
      if (r.stream == stream) {
        out.push_back(c.at_ns);
        break;
      }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// --- bare CAF floor
// -------------------------------------------------------------------------------

constexpr auto k_caf_timeout = std::chrono::seconds(60);

caf::behavior reply_fn() {
  return {[](std::int64_t x) { return x; }};
}

struct floor_job {
  std::size_t steps = 0; ///< chain: sequential steps; fan-out: concurrent echo requests
  bool fanout = false;
  std::promise<void> done;
};

/// Chain: per step, a round trip to the journal stand-in then one to the echo actor. Fan-out: a
/// journal round trip, `steps` echo requests at once, a journal round trip, one echo request,
/// a journal round trip.
class floor_driver : public caf::event_based_actor {
public:
  floor_driver(caf::actor_config& cfg, caf::actor journal, caf::actor echo, floor_job* job)
      : caf::event_based_actor(cfg), journal_(std::move(journal)), echo_(std::move(echo)),
        job_(job) {}

  caf::behavior make_behavior() override {
    return {[this](std::int64_t) {
      if (job_->fanout)
        fan();
      else
        step();
    }};
  }

private:
  void finish() {
    job_->done.set_value();
    quit();
  }

  void step() {
    if (i_ == job_->steps) return finish();
    const auto x = static_cast<std::int64_t>(i_);
    request(journal_, k_caf_timeout, x).then([this, x](std::int64_t) {
      request(echo_, k_caf_timeout, x).then([this](std::int64_t) {
        ++i_;
        step();
      });
    });
  }

  void fan() {
    request(journal_, k_caf_timeout, std::int64_t{0}).then([this](std::int64_t) {
      for (std::size_t b = 0; b < job_->steps; ++b)
        request(echo_, k_caf_timeout, static_cast<std::int64_t>(b)).then([this](std::int64_t) {
          if (++i_ < job_->steps) return;
          request(journal_, k_caf_timeout, std::int64_t{1}).then([this](std::int64_t) {
            request(echo_, k_caf_timeout, std::int64_t{2}).then([this](std::int64_t) {
              request(journal_, k_caf_timeout, std::int64_t{3}).then([this](std::int64_t) {
                finish();
              });
            });
          });
        });
    });
  }

  caf::actor journal_, echo_;
  floor_job* job_;
  std::size_t i_ = 0;
};

/// Seconds for one chain (or one fan-out) on a fresh bare actor system.
double caf_floor_once(std::size_t steps, bool fanout) {
  bench::bare_config cfg;
  caf::actor_system sys{cfg};
  // Event-based, as af.journal runs on the memory store (the floor is measured for it only).
  auto journal = sys.spawn(reply_fn);
  auto echo = sys.spawn(reply_fn);
  floor_job job;
  job.steps = steps;
  job.fanout = fanout;
  auto done = job.done.get_future();
  auto driver = sys.spawn<floor_driver>(journal, echo, &job);
  const auto t0 = bench::clock::now();
  caf::anon_send(driver, std::int64_t{0});
  if (done.wait_for(600s) != std::future_status::ready) die("bare CAF floor did not finish");
  const auto t1 = bench::clock::now();
  caf::anon_send_exit(journal, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
  return bench::seconds_between(t0, t1);
}

// --- chain
// ------------------------------------------------------------------------------------------

struct chain_run {
  bench::run exec;               ///< µs per step; samples: µs between consecutive commits
  bench::run store;              ///< µs per step, store replay
  double cpu_us = 0;             ///< process CPU µs per step
  double commits = 0;            ///< journal commits of the execution's stream
  double batch = 0;              ///< requests per journal call in the window
  double live_journal_share = 0; ///< of the wall time, the live journal spent in append_batch
  double live_commit_ms = 0;     ///< mean live append_batch call
  double replay_commit_ms = 0;   ///< mean replayed journal append_batch call
  double events_per_step = 0, bytes_per_step = 0, audit_per_step = 0;
  double audit_lag_ms = 0; ///< from the execution's end to the audit writer's last commit
};

/// `completed`/`want`: what the execution must end with (the compensated saga fails, having
/// completed its steps and their compensations); `steps` divides the wall time.
chain_run chain_once(const store_spec& spec, bool audit, const v1::PlanIR& p,
                     const v1::PlanIR& warm, std::size_t steps, std::size_t completed = 0,
                     v1::ExecStatus want = v1::EXEC_COMPLETED) {
  chain_run out;
  store_instance si{spec};
  exec_node en{si, audit};
  en.run(warm, "{}", 3);
  std::this_thread::sleep_for(50ms); // the warm-up's audit appends land
  const auto c0 = process_cpu_seconds();
  const auto t0 = bench::clock::now();
  auto info = en.run(p, "{}", completed != 0 ? completed : steps, want);
  const auto t1 = bench::clock::now();
  const auto c1 = process_cpu_seconds();
  const auto drained = en.wait_audit_drained();
  en.stop();
  const double secs = bench::seconds_between(t0, t1);
  out.exec.value = secs / static_cast<double>(steps) * 1e6;
  out.exec.ops = steps;
  out.cpu_us = (c1 - c0) / static_cast<double>(steps) * 1e6;
  const auto from = t0.time_since_epoch().count();
  const auto to = t1.time_since_epoch().count();
  auto calls = en.rec->snapshot();
  auto commits = commits_of(calls, plan::stream_of(info.execution_id()), from, to);
  out.commits = static_cast<double>(commits.size());
  for (std::size_t i = 1; i < commits.size(); ++i)
    out.exec.samples.push_back(static_cast<double>(commits[i] - commits[i - 1]) * 1e-3);
  out.audit_lag_ms = std::max<double>(0, static_cast<double>(drained - to) * 1e-6);
  auto rc = rebuild(*en.rec);
  auto rr = replay(rc, spec, from, k_forever);
  out.live_journal_share = live_journal_seconds(calls, from, to) / secs;
  out.live_commit_ms = rr.journal_calls > 0 ? live_journal_seconds(calls, from, to)
                                                  / static_cast<double>(rr.journal_calls) * 1e3
                                            : 0;
  out.replay_commit_ms =
      rr.journal_calls > 0 ? rr.journal_seconds / static_cast<double>(rr.journal_calls) * 1e3 : 0;
  out.events_per_step = static_cast<double>(rr.journal_events) / static_cast<double>(steps);
  out.bytes_per_step = static_cast<double>(rr.journal_bytes) / static_cast<double>(steps);
  out.audit_per_step = static_cast<double>(rr.audit_rows) / static_cast<double>(steps);
  out.store.value = rr.seconds / static_cast<double>(steps) * 1e6;
  out.store.ops = steps;
  out.batch = rr.journal_calls > 0
                  ? static_cast<double>(rr.journal_requests) / static_cast<double>(rr.journal_calls)
                  : 0;
  return out;
}

void bench_chain(const store_spec& spec, bool audit, int runs, std::size_t steps,
                 const std::optional<bench::target>& t, bool with_floor) {
  const auto t_compile0 = bench::clock::now();
  const auto p = compile(chain_yaml(steps), "chain.yaml");
  const double compile_s = bench::seconds_between(t_compile0, bench::clock::now());
  const auto warm = compile(chain_yaml(3), "warm.yaml");
  std::vector<bench::run> exec, replayed, bare;
  std::vector<double> cpu, commits, share, live_ms, replay_ms, ev, bytes, rows, lag;
  for (int i = 0; i < runs; ++i) {
    auto r = chain_once(spec, audit, p, warm, steps);
    exec.push_back(std::move(r.exec));
    replayed.push_back(std::move(r.store));
    cpu.push_back(r.cpu_us);
    commits.push_back(r.commits);
    share.push_back(r.live_journal_share);
    live_ms.push_back(r.live_commit_ms);
    replay_ms.push_back(r.replay_commit_ms);
    ev.push_back(r.events_per_step);
    bytes.push_back(r.bytes_per_step);
    rows.push_back(r.audit_per_step);
    lag.push_back(r.audit_lag_ms);
    if (with_floor) {
      bench::run f;
      f.value = caf_floor_once(steps, false) / static_cast<double>(steps) * 1e6;
      f.ops = steps;
      bare.push_back(f);
    }
  }
  auto s = bench::summarize(exec, bench::kind::latency, "us");
  auto b = bench::summarize(replayed, bench::kind::latency, "us");
  const std::string name =
      "exec.chain." + spec.suffix() + (audit ? std::string{} : std::string{".noaudit"});
  const std::string title = "Durable step, " + std::to_string(steps)
                            + "-step sequential chain of std.echo, " + spec.suffix()
                            + (audit ? "" : ", step audit off") + ", per step";
  std::ostringstream note;
  note << spec.describe() << "; "
       << (audit ? "every step outcome audited (default)" : "exec_options::audit_steps = false")
       << "; median = wall time / steps (StartExecution ask to reply); p50/p99 = intervals "
          "between the stream's consecutive journal commits; "
       << bench::num(bench::median(commits)) << " commits per execution, "
       << bench::num(bench::median(ev)) << " journal events (" << bench::num(bench::median(bytes))
       << " B) and " << bench::num(bench::median(rows)) << " audit rows per step; the journal's "
       << "append_batch took " << bench::num(bench::median(live_ms)) << " ms per call ("
       << bench::num(100 * bench::median(share))
       << "% of the wall time; replayed: " << bench::num(bench::median(replay_ms))
       << " ms); the audit writer's last commit came " << bench::num(bench::median(lag))
       << " ms after the reply; process CPU " << bench::num(bench::median(cpu))
       << " us per step (2 cores); plan compile " << bench::num(compile_s * 1e3)
       << " ms (not timed), plan IR " << bench::num(static_cast<double>(p.ByteSizeLong()) / 1024.0)
       << " KiB (journaled once, in ExecutionStarted)";
  bench::emit(name, title, s, &b, k_replay_name, t, note.str());
  if (with_floor) {
    auto f = bench::summarize(bare, bench::kind::latency, "us");
    bench::emit(name + ".vs_caf", title + ", against the bare-CAF messaging floor", s, &f,
                "bare CAF: per step a round trip to an event-based actor standing for the "
                "journal, then to one standing for std.echo (60 s request timeouts)",
                std::nullopt, "informational: the same runs as " + name);
  }
}

// --- saga
// ------------------------------------------------------------------------------------------

/// exec.saga.<store>: the saga's success path against the same chain as a dag; on memory also
/// exec.saga.compensated.memory: every step undone, against the success path.
void bench_saga(const store_spec& spec, int runs, std::size_t steps) {
  const auto dag = compile(chain_yaml(steps), "chain.yaml");
  const auto saga = compile(saga_yaml(steps, false), "saga.yaml");
  const auto undo = compile(saga_yaml(steps, true), "saga-undo.yaml");
  const auto warm = compile(chain_yaml(3), "warm.yaml");
  const bool compensate = spec.kind == "memory";
  std::vector<bench::run> saga_runs, dag_runs, undo_runs;
  std::vector<double> saga_ev, dag_ev, saga_bytes, dag_bytes, undo_ev, saga_cpu, dag_cpu;
  for (int i = 0; i < runs; ++i) {
    auto d = chain_once(spec, true, dag, warm, steps);
    auto s = chain_once(spec, true, saga, warm, steps);
    dag_ev.push_back(d.events_per_step);
    saga_ev.push_back(s.events_per_step);
    dag_bytes.push_back(d.bytes_per_step);
    saga_bytes.push_back(s.bytes_per_step);
    dag_cpu.push_back(d.cpu_us);
    saga_cpu.push_back(s.cpu_us);
    dag_runs.push_back(std::move(d.exec));
    saga_runs.push_back(std::move(s.exec));
    if (compensate) {
      // steps forward + steps compensations completed; the failing step is not.
      auto u = chain_once(spec, true, undo, warm, steps, 2 * steps, v1::EXEC_FAILED);
      undo_ev.push_back(u.events_per_step);
      undo_runs.push_back(std::move(u.exec));
    }
  }
  auto s = bench::summarize(saga_runs, bench::kind::latency, "us");
  auto d = bench::summarize(dag_runs, bench::kind::latency, "us");
  std::ostringstream note;
  note << spec.describe() << "; every step outcome audited; median = wall time / steps; p50/p99 "
       << "= intervals between the stream's consecutive journal commits; per step: saga "
       << bench::num(bench::median(saga_ev)) << " journal events ("
       << bench::num(bench::median(saga_bytes)) << " B), process CPU "
       << bench::num(bench::median(saga_cpu)) << " us; dag " << bench::num(bench::median(dag_ev))
       << " events (" << bench::num(bench::median(dag_bytes)) << " B), "
       << bench::num(bench::median(dag_cpu)) << " us CPU";
  bench::emit("exec.saga." + spec.suffix(),
              "Saga step, " + std::to_string(steps)
                  + "-step sequential saga of std.echo (each "
                    "with a compensation, not run), "
                  + spec.suffix() + ", per step",
              s, &d, "the same chain as a dag (exec.chain's plan), same runs, interleaved",
              std::nullopt, note.str());
  if (!compensate) return;
  auto u = bench::summarize(undo_runs, bench::kind::latency, "us");
  bench::emit("exec.saga.compensated." + spec.suffix(),
              "Compensated saga, " + std::to_string(steps)
                  + " std.echo steps, then one that "
                    "fails: every step undone; per step and its compensation, "
                  + spec.suffix(),
              u, &s, "the saga's success path (exec.saga." + spec.suffix() + "), same runs",
              std::nullopt,
              spec.describe() + "; " + bench::num(bench::median(undo_ev))
                  + " journal events per step (the step, its compensation, the failure and "
                    "SagaCompensating spread over them)");
}

// --- fan-out
// ----------------------------------------------------------------------------------------

/// One fan-out's memory, in a fresh process (this executable with --scenario fanout_rss_once):
/// a node, a 10-item warm-up, then one N-way execution: the peak RSS growth during it (VmHWM
/// reset through /proc/self/clear_refs, minus the RSS before) and what operator new handed out.
struct fanout_memory {
  double peak_kib = 0;
  double alloc_bytes = 0;
  double alloc_calls = 0;
};

fanout_memory fanout_memory_once(std::size_t items) {
  const auto p = compile(fanout_yaml(), "fanout.yaml");
  store_instance si{{"memory", "FULL"}};
  exec_node en{si, true};
  en.run(p, items_json(10), 11);
  std::this_thread::sleep_for(50ms);
  const auto inputs = items_json(items);
  const auto rss0 = bench::rss_bytes();
  bench::reset_peak_rss();
  g_alloc_bytes = 0;
  g_alloc_calls = 0;
  g_count_allocs = true;
  en.run(p, inputs, items + 1);
  g_count_allocs = false;
  const auto peak = bench::peak_rss_bytes();
  fanout_memory m;
  m.peak_kib = static_cast<double>(peak > rss0 ? peak - rss0 : 0) / 1024.0;
  m.alloc_bytes = static_cast<double>(g_alloc_bytes.load());
  m.alloc_calls = static_cast<double>(g_alloc_calls.load());
  return m;
}

fanout_memory fanout_memory_child(std::size_t items) {
  const auto exe = fs::read_symlink("/proc/self/exe").string();
  const auto cmd = exe + " --scenario fanout_rss_once --fanout " + std::to_string(items);
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) die("popen " + cmd);
  fanout_memory m;
  const int got = std::fscanf(f, "rss %lf %lf %lf", &m.peak_kib, &m.alloc_bytes, &m.alloc_calls);
  if (::pclose(f) != 0 || got != 3) die("the memory child failed: " + cmd);
  return m;
}

void bench_fanout(int runs, std::size_t items, bool audit) {
  const auto p = compile(fanout_yaml(), "fanout.yaml");
  const auto inputs = items_json(items);
  const auto warm_inputs = items_json(10);
  constexpr int k_per_run = 5;
  const store_spec spec{"memory", "FULL"};
  std::vector<bench::run> exec, replayed, bare, rss;
  std::vector<double> alloc_bytes, alloc_calls, cpu_ms, lag_ms;
  for (int i = 0; i < runs; ++i) {
    store_instance si{spec};
    exec_node en{si, audit};
    en.run(p, warm_inputs, 11);
    std::this_thread::sleep_for(50ms);
    bench::run r;
    std::int64_t from = 0, to = 0;
    double cpu = 0;
    for (int k = 0; k < k_per_run; ++k) {
      const auto c0 = process_cpu_seconds();
      const auto t0 = bench::clock::now();
      en.run(p, inputs, items + 1);
      const auto t1 = bench::clock::now();
      cpu += process_cpu_seconds() - c0;
      if (k == 0) from = t0.time_since_epoch().count();
      to = t1.time_since_epoch().count();
      r.samples.push_back(bench::seconds_between(t0, t1) * 1e3);
      std::this_thread::sleep_for(20ms); // the audit appends of this execution land
    }
    const auto drained = en.wait_audit_drained();
    en.stop();
    lag_ms.push_back(std::max<double>(0, static_cast<double>(drained - to) * 1e-6));
    r.value = bench::median(r.samples);
    r.ops = k_per_run;
    exec.push_back(std::move(r));
    cpu_ms.push_back(cpu / k_per_run * 1e3);
    auto rc = rebuild(*en.rec);
    auto rr = replay(rc, spec, from, k_forever);
    bench::run b;
    b.value = rr.seconds / k_per_run * 1e3;
    b.ops = k_per_run;
    replayed.push_back(b);
    if (!audit) continue;
    bench::run f;
    f.value = caf_floor_once(items, true) * 1e3;
    f.ops = 1;
    bare.push_back(f);
    const auto m = fanout_memory_child(items);
    bench::run mr;
    mr.value = m.peak_kib;
    mr.ops = 1;
    rss.push_back(mr);
    alloc_bytes.push_back(m.alloc_bytes);
    alloc_calls.push_back(m.alloc_calls);
  }
  auto s = bench::summarize(exec, bench::kind::latency, "ms");
  auto b = bench::summarize(replayed, bench::kind::latency, "ms");
  const std::string name = audit ? "exec.fanout.memory" : "exec.fanout.memory.noaudit";
  const std::string title = std::to_string(items)
                            + "-way fan-out of std.echo (for_each) + join "
                              "step, one execution, in-memory store"
                            + (audit ? "" : ", step audit off");
  std::ostringstream note;
  note << "ask-to-reply time of one execution from the main thread (node::ask), 5 per run on a "
          "warm node (after a 10-item warm-up), the run's value is their median; "
       << items + 1 << " steps completed per execution; "
       << (audit ? "every step outcome audited (default)" : "exec_options::audit_steps = false")
       << "; process CPU " << bench::num(bench::median(cpu_ms))
       << " ms per execution (2 cores); the audit writer's last commit came "
       << bench::num(bench::median(lag_ms)) << " ms after the last execution's reply";
  bench::emit(name, title, s, &b, k_replay_name,
              audit ? std::optional{bench::target{"median", "<", 20}} : std::nullopt,
              audit ? note.str() : "informational: " + note.str());
  if (!audit) return;
  auto f = bench::summarize(bare, bench::kind::latency, "ms");
  bench::emit("exec.fanout.memory.vs_caf", title + ", against the bare-CAF messaging floor", s, &f,
              "bare CAF: a journal round trip, " + std::to_string(items)
                  + " concurrent echo requests, a journal round trip, an echo request, a "
                    "journal round trip (event-based actors)",
              std::nullopt, "informational: the same runs as exec.fanout.memory");
  auto m = bench::summarize(rss, bench::kind::plain, "KiB");
  std::ostringstream mnote;
  mnote << "a fresh process per run: node, 10-item warm-up, then one " << items
        << "-way execution; VmHWM reset through /proc/self/clear_refs before it, peak minus the "
           "RSS before it (the store's copy of the events and the audit rows included); "
           "allocated during it through operator new: "
        << bench::num(bench::median(alloc_bytes) / 1024.0 / 1024.0) << " MiB in "
        << bench::num(bench::median(alloc_calls)) << " allocations (median over runs)";
  bench::emit("exec.fanout.memory.rss",
              "Peak RSS growth of the process during one " + std::to_string(items)
                  + "-way fan-out + join (in-memory store)",
              m, nullptr, {}, std::nullopt, mnote.str());
}

// --- concurrent executions ----------------------------------------------------------------------

struct conc_job {
  std::vector<v1::StartExecution> starts;
  std::atomic<std::size_t> replies{0};
  std::atomic<std::uint64_t> steps{0};
  std::atomic<std::int64_t> last_ns{0};
  std::promise<void> done;
  std::mutex mtx;
  std::string first_error;
};

/// Starts every execution of the job at once and waits for their ends (wait = true).
class starter_agent : public af::agent_base<starter_agent> {
public:
  explicit starter_agent(conc_job* job) : job_(job) {}
  static void define(af::handlers<starter_agent>& h) {
    h.kind("bench.starter").on(&starter_agent::go);
  }
  void go(af::context& ctx, const google::protobuf::UInt64Value&) {
    const auto total = job_->starts.size();
    for (auto& s : job_->starts)
      ctx.ask<v1::ExecutionInfo>(
          plan::k_exec_agent, std::move(s), 600s, [this, total](af::expected<v1::ExecutionInfo> r) {
            if (!r || r->status() != v1::EXEC_COMPLETED) {
              std::lock_guard g{job_->mtx};
              if (job_->first_error.empty())
                job_->first_error = r ? "status " + std::to_string(r->status()) + ": " + r->error()
                                      : r.error().to_string();
            } else {
              job_->steps += r->steps_completed();
            }
            if (++job_->replies == total) {
              job_->last_ns = steady_ns();
              job_->done.set_value();
            }
          });
  }

private:
  conc_job* job_;
};

constexpr std::size_t k_step_block = 1000;

/// Durations (s) of consecutive blocks of `block` steps made durable, from the journal commits
/// in [from_ns, to_ns] (each commit's end): every append to a stream after its first carries one
/// step result in these chains. The first block starts at from_ns.
std::vector<double> step_blocks(std::vector<call_record> calls, std::int64_t from_ns,
                                std::int64_t to_ns, std::size_t block) {
  std::sort(calls.begin(), calls.end(), [](const call_record& a, const call_record& b) {
    return a.at_ns + a.took_ns < b.at_ns + b.took_ns;
  });
  std::vector<double> out;
  std::size_t steps = 0;
  std::int64_t start = from_ns;
  for (const auto& c : calls) {
    if (c.audit || c.at_ns < from_ns || c.at_ns > to_ns) continue;
    for (const auto& r : c.requests)
      if (r.expected_version > 0) ++steps;
    if (steps < block) continue;
    const auto end = c.at_ns + c.took_ns;
    out.push_back(static_cast<double>(end - start) * 1e-9 * static_cast<double>(block)
                  / static_cast<double>(steps));
    start = end;
    steps = 0;
  }
  return out;
}

struct conc_run {
  bench::run exec, store;
  double batch = 0;
  double cpu_us = 0;
  double live_journal_share = 0;
  double live_commit_ms = 0;
  double events_per_step = 0, bytes_per_step = 0, audit_per_step = 0;
  double audit_lag_ms = 0; ///< from the execution's end to the audit writer's last commit
};

conc_run concurrent_once(const store_spec& spec, bool audit, const v1::PlanIR& p,
                         const v1::PlanIR& warm, std::size_t executions, std::size_t chain,
                         int run_no) {
  store_instance si{spec};
  exec_node en{si, audit};
  en.run(warm, "{}", 3);
  std::this_thread::sleep_for(50ms);
  conc_job job;
  for (std::size_t i = 0; i < executions; ++i) {
    v1::StartExecution s;
    *s.mutable_plan() = p;
    s.set_inputs_json("{}");
    s.set_wait(true);
    s.set_by("bench");
    job.starts.push_back(std::move(s));
  }
  auto starter = en.n->spawn<starter_agent>("starter-" + std::to_string(run_no), &job);
  if (!starter) die("spawn: " + starter.error().to_string());
  auto done = job.done.get_future();
  const auto c0 = process_cpu_seconds();
  const auto t0 = bench::clock::now();
  en.n->tell(*starter, google::protobuf::UInt64Value{});
  if (done.wait_for(600s) != std::future_status::ready) die("executions did not end in 600 s");
  const auto c1 = process_cpu_seconds();
  if (!job.first_error.empty()) die("concurrent execution failed: " + job.first_error);
  if (job.steps != executions * chain)
    die("concurrent: " + std::to_string(job.steps.load()) + " steps completed, expected "
        + std::to_string(executions * chain));
  const std::int64_t from = t0.time_since_epoch().count();
  const std::int64_t to = job.last_ns.load();
  const auto drained = en.wait_audit_drained();
  en.stop();
  conc_run out;
  const double secs = static_cast<double>(to - from) * 1e-9;
  const auto steps = static_cast<double>(executions * chain);
  out.exec.value = steps / secs;
  out.exec.ops = executions * chain;
  out.exec.samples = step_blocks(en.rec->snapshot(), from, to, k_step_block);
  out.exec.ops_per_sample = k_step_block;
  out.cpu_us = (c1 - c0) / steps * 1e6;
  auto rc = rebuild(*en.rec);
  out.audit_lag_ms = std::max<double>(0, static_cast<double>(drained - to) * 1e-6);
  auto rr = replay(rc, spec, from, k_forever);
  const double live = live_journal_seconds(en.rec->snapshot(), from, to);
  out.live_journal_share = live / secs;
  out.live_commit_ms =
      rr.journal_calls > 0 ? live / static_cast<double>(rr.journal_calls) * 1e3 : 0;
  out.events_per_step = static_cast<double>(rr.journal_events) / steps;
  out.bytes_per_step = static_cast<double>(rr.journal_bytes) / steps;
  out.audit_per_step = static_cast<double>(rr.audit_rows) / steps;
  out.store.value = steps / rr.seconds;
  out.store.ops = executions * chain;
  out.batch = rr.journal_calls > 0
                  ? static_cast<double>(rr.journal_requests) / static_cast<double>(rr.journal_calls)
                  : 0;
  return out;
}

void bench_concurrent(const store_spec& spec, bool audit, int runs, std::size_t executions,
                      std::size_t chain, const std::optional<bench::target>& t) {
  const auto p = compile(chain_yaml(chain), "chain.yaml");
  const auto warm = compile(chain_yaml(3), "warm.yaml");
  std::vector<bench::run> exec, replayed;
  std::vector<double> batches, cpu, share, live_ms, ev, bytes, rows, lag;
  for (int i = 0; i < runs; ++i) {
    auto r = concurrent_once(spec, audit, p, warm, executions, chain, i);
    share.push_back(r.live_journal_share);
    live_ms.push_back(r.live_commit_ms);
    ev.push_back(r.events_per_step);
    bytes.push_back(r.bytes_per_step);
    rows.push_back(r.audit_per_step);
    lag.push_back(r.audit_lag_ms);
    exec.push_back(std::move(r.exec));
    replayed.push_back(std::move(r.store));
    batches.push_back(r.batch);
    cpu.push_back(r.cpu_us);
  }
  auto s = bench::summarize(exec, bench::kind::rate, "steps/s");
  auto b = bench::summarize(replayed, bench::kind::rate, "steps/s");
  std::ostringstream note;
  note << spec.describe() << "; " << executions << " executions x " << chain
       << " steps started at once by one agent; "
       << (audit ? "every step outcome audited (default)" : "exec_options::audit_steps = false")
       << "; per step " << bench::num(bench::median(ev)) << " journal events ("
       << bench::num(bench::median(bytes)) << " B, the plan in each ExecutionStarted included) and "
       << bench::num(bench::median(rows))
       << " audit rows; journal: " << bench::num(bench::median(batches))
       << " appends per transaction (median over runs), append_batch "
       << bench::num(bench::median(live_ms)) << " ms per call, "
       << bench::num(100 * bench::median(share))
       << "% of the wall time; the audit writer's last commit came "
       << bench::num(bench::median(lag)) << " ms after the last reply; process CPU "
       << bench::num(bench::median(cpu)) << " us per step (2 cores); plan IR "
       << bench::num(static_cast<double>(p.ByteSizeLong()) / 1024.0)
       << " KiB per execution; p50/p99: rates over blocks of " << k_step_block
       << " steps made durable (journal commits; p99 = the slow tail)";
  bench::emit("exec.concurrent." + spec.suffix() + (audit ? "" : ".noaudit"),
              "Durable steps/s, " + std::to_string(executions) + " concurrent executions of a "
                  + std::to_string(chain) + "-step std.echo chain, " + spec.suffix()
                  + (audit ? "" : ", step audit off"),
              s, &b, k_replay_name, t, t ? note.str() : "informational: " + note.str());
}

} // namespace

int main(int argc, char** argv) {
  const int runs = static_cast<int>(bench::int_option(argc, argv, "--runs", 5));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "all");
  const auto steps = static_cast<std::size_t>(bench::int_option(argc, argv, "--steps", 10000));
  const auto items = static_cast<std::size_t>(bench::int_option(argc, argv, "--fanout", 1000));
  const auto executions =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--executions", 100));
  const auto chain = static_cast<std::size_t>(bench::int_option(argc, argv, "--chain", 100));
  const auto saga_steps =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--saga-steps", 10000));
  const auto saga_sqlite_steps =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--saga-sqlite-steps", 1000));
  // chain_memory only: "on" runs the audited chain alone, "off" the .noaudit one (for profilers);
  // --floor 0 leaves out the bare-CAF floor runs (exec.chain.memory.vs_caf).
  const auto audit_sides = bench::string_option(argc, argv, "--audit", "both");
  const bool with_floor = bench::int_option(argc, argv, "--floor", 1) != 0;
  const auto want = [&](const char* s) { return scenario == "all" || scenario == s; };
  bool any = false;
  if (want("chain_memory")) {
    any = true;
    if (audit_sides != "off")
      bench_chain({"memory", "FULL"}, true, runs, steps, bench::target{"median", "<=", 20},
                  with_floor);
    if (audit_sides != "on")
      bench_chain({"memory", "FULL"}, false, runs, steps, std::nullopt, false);
  }
  if (want("chain_sqlite")) {
    any = true;
    bench_chain({"sqlite", "FULL"}, true, runs, steps, std::nullopt, false);
    bench_chain({"sqlite", "FULL"}, false, runs, steps, std::nullopt, false);
    bench_chain({"sqlite", "NORMAL"}, true, runs, steps, std::nullopt, false);
  }
  if (scenario == "fanout_rss_once") {
    const auto m = fanout_memory_once(items);
    std::printf("rss %.17g %.17g %.17g\n", m.peak_kib, m.alloc_bytes, m.alloc_calls);
    return 0;
  }
  if (want("fanout_memory")) {
    any = true;
    bench_fanout(runs, items, true);
    bench_fanout(runs, items, false);
  }
  if (want("concurrent_sqlite")) {
    any = true;
    bench_concurrent({"sqlite", "FULL"}, true, runs, executions, chain,
                     bench::target{"median", ">=", 20000});
    bench_concurrent({"sqlite", "FULL"}, false, runs, executions, chain, std::nullopt);
    bench_concurrent({"sqlite", "NORMAL"}, true, runs, executions, chain, std::nullopt);
    bench_concurrent({"memory", "FULL"}, true, runs, executions, chain, std::nullopt);
    bench_concurrent({"memory", "FULL"}, false, runs, executions, chain, std::nullopt);
  }
  if (want("saga_memory")) {
    any = true;
    bench_saga({"memory", "FULL"}, runs, saga_steps);
  }
  if (want("saga_sqlite")) {
    any = true;
    bench_saga({"sqlite", "FULL"}, runs, saga_sqlite_steps);
  }
  if (!any) die("unknown --scenario " + scenario);
  return 0;
}
