// Scenario 7: persistence. Every store is fresh and durable (SQLite synchronous=FULL in a
// temporary directory; PostgreSQL with fsync and synchronous_commit on, when AF_TEST_PG_URL is set,
// e.g. under tests/persistence/with_postgres.sh).
//
//  journal.append.<backend>  group commit: 64 appender agents, each with its own stream, each
//      asking af.journal (the real agent, started as a system service of the node with
//      store::journal_child, as `af node start` does) an AppendRequest of one ~100 B event and
//      sending the next one when the reply comes (closed loop). Rate = events over the time from
//      the first request to the last reply; samples are the durations of 1,024 consecutive
//      replies. Baseline: the same backend, one single-event request per append_batch call
//      (one transaction and one sync per event), sequentially from one thread. The note gives the
//      mean batch size the journal achieved (af_journal_batch_size) and the baseline's commit
//      latency.
//  audit.verify.<size>[.nocols]  store::verify_chain with store::parallel_verify_options() (what
//      `af audit verify` runs: rows checked on every core, the next page read from SQLite
//      meanwhile) over a chain of records of exactly <size> canonical bytes; .nocols without the
//      column check (no Protobuf parse per row; `af audit verify` checks the columns). Wall time;
//      the page cache is warm (the chain was just written). Baseline: af::sha256 over the same
//      bytes (prev_hash || record), held in memory, on one core, in thread CPU time.
//      audit.verify_per_core.<size>: the same rate divided by the cores used.
//  read.<backend>.{journal,direct}  a 100k-event stream read back in pages of 1,000:
//      ReadRequests to af.journal (node::ask from the main thread) with backend->read on the
//      same store as the baseline; direct backend->read against raw SQL (sqlite3, SQLite only).
//
//   af_bench_store [--runs 5] [--scenario journal|audit|read] (default: all)
//                  [--appenders 64] [--appends 400] (per appender) [--baseline-appends 1000]
//                  [--audit-rows 200000] [--read-events 100000]
#include "bench_common.hpp"

#include "af/agent.hpp"
#include "af/hash.hpp"
#include "af/node.hpp"
#include "af/store/audit.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/audit.pb.h"
#include "af/v1/store.pb.h"

#include <google/protobuf/wrappers.pb.h>

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace store = af::store;

namespace {

using bench::die;
using bench::process_cpu_seconds;

std::size_t cores() { return std::max(1U, std::thread::hardware_concurrency()); }

/// A store under test: SQLite (a fresh file per run) or PostgreSQL (emptied per run).
struct store_kind {
  std::string name; // "sqlite" | "postgres"
  std::string pg_url;

  /// A fresh, empty store; `open()` of the result opens it again (for the journal agent).
  struct instance {
    std::unique_ptr<bench::temp_dir> dir;
    std::function<af::expected<std::unique_ptr<store::backend>>()> open;
  };

  [[nodiscard]] instance fresh(const std::string& synchronous = "FULL") const {
    instance in;
    if (name == "sqlite") {
      in.dir = std::make_unique<bench::temp_dir>("af-bench-store");
      store::sqlite_options so;
      so.path = in.dir->db();
      so.synchronous = synchronous;
      in.open = [so]() { return store::open_sqlite(so); };
    } else {
      store::postgres_options po;
      po.url = pg_url;
      po.pool_size = 1;
      auto db = store::open_postgres(po);
      if (!db) die("postgres: " + db.error().to_string());
      if (auto st = (*db)->migrate_to(0); !st) die("postgres reset: " + st.error().to_string());
      if (auto st = (*db)->migrate_to((*db)->latest_schema_version()); !st)
        die("postgres migrate: " + st.error().to_string());
      in.open = [po]() { return store::open_postgres(po); };
    }
    return in;
  }

  [[nodiscard]] std::string durability() const {
    return name == "sqlite" ? "SQLite synchronous=FULL (WAL)"
                            : "PostgreSQL 15, fsync=on, synchronous_commit=on";
  }
};

std::unique_ptr<store::backend> must_open(const store_kind::instance& in) {
  auto db = in.open();
  if (!db) die("open: " + db.error().to_string());
  return std::move(*db);
}

std::unique_ptr<af::node> start_node(store::journal_options jo) {
  af::node::options opt; // cfg = af::config::defaults(): work stealing, 2 threads
  af::log_options lo;
  lo.level = af::log_level::warn;
  lo.format = "text";
  if (auto backend = af::make_log_backend(lo)) opt.log = *backend;
  opt.system_services.push_back(store::journal_child(std::move(jo)));
  auto n = af::node::start(std::move(opt));
  if (!n) die("node start failed: " + n.error().to_string());
  return std::move(*n);
}

/// Sum of the metric lines starting with `prefix` (Prometheus text).
double metric_sum(af::node& n, const std::string& prefix) {
  std::istringstream in(n.metrics().serialize_text());
  double sum = 0;
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(prefix)) sum += std::stod(line.substr(line.rfind(' ') + 1));
  return sum;
}

/// A payload of exactly `size` bytes.
std::string filler(std::size_t size, char c = 'x') { return std::string(size, c); }

// --- 1. appends with group commit ----------------------------------------------------------------

constexpr std::size_t k_payload = 100;
constexpr std::size_t k_block = 1024; // replies per rate sample

struct append_job {
  std::size_t appenders = 64;
  std::size_t each = 400;
  std::atomic<std::size_t> replies{0};
  std::atomic<std::size_t> finished{0};
  std::atomic<std::size_t> failures{0};
  std::vector<std::atomic<std::int64_t>> stamps; // steady_clock at every k_block-th reply
  std::promise<void> done;
  std::string first_error;
  std::mutex mtx;

  explicit append_job(std::size_t a, std::size_t e)
      : appenders(a), each(e), stamps(a * e / k_block + 2) {}

  void replied() {
    const auto c = replies.fetch_add(1, std::memory_order_relaxed) + 1;
    if (c % k_block == 0)
      stamps[c / k_block].store(bench::clock::now().time_since_epoch().count(),
                                std::memory_order_relaxed);
  }
};

/// Appends one ~100 B event to its own stream, waits for the reply, appends the next (closed
/// loop), `each` times after it is told to go.
class appender_agent : public af::agent_base<appender_agent> {
public:
  explicit appender_agent(append_job* job) : job_(job) {}
  static void define(af::handlers<appender_agent>& h) {
    h.kind("bench.appender").on(&appender_agent::go);
  }
  void go(af::context& ctx, const google::protobuf::UInt64Value&) {
    auto j = ctx.lookup(store::k_journal_agent);
    if (!j) die("no journal agent: " + j.error().to_string());
    journal_ = *j;
    request_.set_stream("bench/" + ctx.name());
    auto* e = request_.add_events();
    e->set_type("bench.Event");
    e->set_payload(filler(k_payload));
    next(ctx);
  }

private:
  void next(af::context& ctx) {
    request_.set_expected_version(version_);
    ctx.ask<af::v1::AppendResult>(
        journal_, request_, 30s, [this, &ctx](af::expected<af::v1::AppendResult> r) {
          if (!r || r->last_version() != version_ + 1) {
            std::lock_guard g{job_->mtx};
            if (job_->failures++ == 0)
              job_->first_error = r ? "unexpected version" : r.error().to_string();
          } else {
            ++version_;
          }
          job_->replied();
          if (++sent_ < job_->each) return next(ctx);
          if (++job_->finished == job_->appenders) job_->done.set_value();
        });
  }

  append_job* job_;
  af::agent_ref journal_;
  af::v1::AppendRequest request_;
  std::uint64_t version_ = 0;
  std::size_t sent_ = 0;
};

struct append_run {
  bench::run r;
  double batch_mean = 0;
  double commit_ms = 0;    ///< mean time of one append_batch call (af_journal_append_seconds)
  double commit_share = 0; ///< the share of the run's wall time the journal spent in them
};

append_run journal_append_run(const store_kind& sk, std::size_t appenders, std::size_t each,
                              std::size_t run_no) {
  auto in = sk.fresh();
  store::journal_options jo;
  jo.open = in.open;
  auto n = start_node(jo);
  // The journal opens its store in on_start; wait until it answers.
  af::v1::ReadRequest ping;
  ping.set_stream("bench/none");
  for (int i = 0; !n->ask<af::v1::ReadResult>(store::k_journal_agent, ping, 5s); ++i) {
    if (i == 500) die("the journal agent did not become ready");
    std::this_thread::sleep_for(10ms);
  }
  append_job job{appenders, each};
  std::vector<af::agent_ref> refs;
  for (std::size_t i = 0; i < appenders; ++i) {
    auto r = n->spawn<appender_agent>("a" + std::to_string(run_no) + "-" + std::to_string(i), &job);
    if (!r) die("spawn: " + r.error().to_string());
    refs.push_back(*r);
  }
  const double batches0 = metric_sum(*n, "af_journal_batch_size_count");
  const double appends0 = metric_sum(*n, "af_journal_batch_size_sum");
  const double commit_s0 = metric_sum(*n, "af_journal_append_seconds_sum");
  auto done = job.done.get_future();
  const auto t0 = bench::clock::now();
  job.stamps[0].store(t0.time_since_epoch().count());
  for (auto& r : refs)
    n->tell(r, google::protobuf::UInt64Value{});
  if (done.wait_for(120s) != std::future_status::ready) die("appenders did not finish in 120 s");
  const auto t1 = bench::clock::now();
  if (job.failures > 0)
    die(std::to_string(job.failures.load()) + " appends failed, first: " + job.first_error);
  const double batches = metric_sum(*n, "af_journal_batch_size_count") - batches0;
  const double appends = metric_sum(*n, "af_journal_batch_size_sum") - appends0;
  const double commit_s = metric_sum(*n, "af_journal_append_seconds_sum") - commit_s0;
  append_run out;
  const auto total = appenders * each;
  out.r.ops = total;
  out.r.value = static_cast<double>(total) / bench::seconds_between(t0, t1);
  out.r.ops_per_sample = k_block;
  for (std::size_t b = 1; b <= total / k_block; ++b)
    out.r.samples.push_back(static_cast<double>(job.stamps[b] - job.stamps[b - 1]) * 1e-9);
  out.batch_mean = batches > 0 ? appends / batches : 0;
  out.commit_ms = batches > 0 ? commit_s / batches * 1e3 : 0;
  out.commit_share = commit_s / bench::seconds_between(t0, t1);
  n->shutdown();
  return out;
}

/// `batch` single-event requests per append_batch call (one transaction and one sync per call),
/// sequentially from this thread, on `appenders` streams in turn. batch = 1: the baseline.
bench::run direct_append_run(const store_kind& sk, std::size_t count, std::size_t appenders,
                             std::size_t batch = 1) {
  auto in = sk.fresh();
  auto db = must_open(in);
  std::vector<std::uint64_t> versions(appenders, 0);
  std::vector<store::append_request> reqs(batch);
  for (auto& req : reqs) {
    req.tenant = "default";
    req.events.push_back({"bench.Event", filler(k_payload), {}});
  }
  bench::run r;
  r.ops_per_sample = static_cast<double>(batch);
  const auto t0 = bench::clock::now();
  auto prev = t0;
  std::size_t i = 0;
  for (; i + batch <= count; i += batch) {
    for (std::size_t k = 0; k < batch; ++k) {
      const auto s = (i + k) % appenders;
      reqs[k].stream = "bench/a" + std::to_string(s);
      reqs[k].expected_version = versions[s]++;
    }
    auto res = db->append_batch(reqs, af::time_point{std::chrono::nanoseconds{1}});
    for (auto& x : res)
      if (!x) die("direct append failed: " + x.error().to_string());
    const auto now = bench::clock::now();
    r.samples.push_back(bench::seconds_between(prev, now));
    prev = now;
  }
  r.ops = i;
  r.value = static_cast<double>(i) / bench::seconds_between(t0, prev);
  return r;
}

void bench_journal(const store_kind& sk, int runs, std::size_t appenders, std::size_t each,
                   std::size_t baseline_count, double target) {
  std::vector<bench::run> agent, base, direct;
  std::vector<double> batch_means, commit_means, commit_shares;
  for (int i = 0; i < runs; ++i) {
    auto a = journal_append_run(sk, appenders, each, static_cast<std::size_t>(i));
    agent.push_back(std::move(a.r));
    batch_means.push_back(a.batch_mean);
    commit_means.push_back(a.commit_ms);
    commit_shares.push_back(a.commit_share);
    base.push_back(direct_append_run(sk, baseline_count, appenders));
    direct.push_back(direct_append_run(sk, appenders * each, appenders, appenders));
  }
  auto s = bench::summarize(agent, bench::kind::rate, "events/s");
  auto b = bench::summarize(base, bench::kind::rate, "events/s");
  const double batch = bench::median(batch_means);
  s.extra = {"batch_size", batch};
  std::vector<double> commit_ms;
  for (const auto& r : base)
    commit_ms.push_back(bench::median(r.samples) * 1e3);
  const double commit = bench::median(commit_ms);
  std::ostringstream note;
  note << sk.durability() << "; journal: " << appenders << " appenders x " << each
       << " appends per run, mean batch " << bench::num(batch) << " appends per transaction"
       << " (af_journal_batch_size, median over runs), i.e. " << bench::num(s.median / batch)
       << " commits/s; mean append_batch call " << bench::num(bench::median(commit_means))
       << " ms (af_journal_append_seconds), " << bench::num(100 * bench::median(commit_shares))
       << "% of the wall time; baseline: median commit (one event, one sync) " << bench::num(commit)
       << " ms";
  bench::emit("journal.append." + sk.name,
              "Appends/s, " + std::to_string(appenders)
                  + " appender agents -> af.journal (group commit), 1 event of 100 B per append, "
                  + sk.name,
              s, &b, "append_batch, one single-event request per transaction, sequential",
              bench::target{"median", ">=", target}, note.str());
  auto d = bench::summarize(direct, bench::kind::rate, "events/s");
  bench::emit("journal.append." + sk.name + ".direct_batch",
              "Appends/s without the agent: append_batch of " + std::to_string(appenders)
                  + " single-event requests per call, sequential, " + sk.name,
              d, &b, "append_batch, one single-event request per transaction, sequential",
              std::nullopt,
              "informational: the backend's ceiling for full batches of "
                  + std::to_string(appenders) + " (p50/p99 over single calls)");
}

// --- 2. audit verify ----------------------------------------------------------------------------

/// A record of exactly `size` canonical bytes (padded with `payload`).
af::v1::AuditRecord audit_record(std::uint64_t seq, std::size_t size) {
  af::v1::AuditRecord r;
  r.set_seq(seq);
  r.set_tenant("acme");
  r.set_ts_ns(1'700'000'000'000'000'000 + static_cast<std::int64_t>(seq));
  r.set_actor("agent-" + std::to_string(seq % 7));
  r.set_action("tool.call");
  r.set_subject("exec/" + std::to_string(seq / 10));
  (*r.mutable_details())["tool"] = "search";
  const auto base = r.ByteSizeLong();
  // payload adds 1 (tag) + the varint of its length + its length.
  for (std::size_t len = 0; len < size; ++len) {
    const std::size_t vlen = len < 128 ? 1 : 2;
    if (base + 1 + vlen + len == size) {
      r.set_payload(filler(len, 'p'));
      break;
    }
  }
  if (r.ByteSizeLong() != size) die("cannot make a record of " + std::to_string(size) + " B");
  return r;
}

struct audit_chain_fixture {
  bench::temp_dir dir{"af-bench-store"};
  std::string path;
  std::string bytes;                // prev_hash || record of every row, back to back
  std::vector<std::size_t> offsets; // where each row's bytes start in `bytes` (+ the end)
};

std::unique_ptr<audit_chain_fixture> make_chain(std::size_t rows, std::size_t size) {
  auto fx = std::make_unique<audit_chain_fixture>();
  fx->path = fx->dir.db();
  store::sqlite_options so;
  so.path = fx->path;
  so.synchronous = "OFF"; // filling only; the chain is read back afterwards
  auto db = store::open_sqlite(so);
  if (!db) die("open: " + db.error().to_string());
  fx->bytes.reserve(rows * (size + 32));
  store::sha256_digest prev{};
  std::vector<store::audit_row> batch;
  for (std::uint64_t s = 1; s <= rows; ++s) {
    auto row = store::make_audit_row(audit_record(s, size), prev);
    fx->offsets.push_back(fx->bytes.size());
    fx->bytes.append(reinterpret_cast<const char*>(prev.data()), prev.size());
    fx->bytes.append(row.record);
    prev = row.hash;
    batch.push_back(std::move(row));
    if (batch.size() == 16384 || s == rows) {
      if (auto st = (*db)->audit_append(batch); !st) die("audit_append: " + st.error().to_string());
      batch.clear();
    }
  }
  fx->offsets.push_back(fx->bytes.size());
  return fx;
}

/// af::sha256 over each row's bytes, one core, thread CPU time.
bench::run raw_sha_run(const audit_chain_fixture& fx) {
  bench::run r;
  const auto n = fx.offsets.size() - 1;
  std::uint8_t sink = 0;
  const double c0 = bench::thread_cpu_seconds();
  double prev = c0;
  constexpr std::size_t block = 16384;
  for (std::size_t i = 0; i < n; ++i) {
    std::string_view v{fx.bytes.data() + fx.offsets[i], fx.offsets[i + 1] - fx.offsets[i]};
    sink ^= af::sha256(v)[0];
    if ((i + 1) % block == 0) {
      const double now = bench::thread_cpu_seconds();
      r.samples.push_back(now - prev);
      prev = now;
    }
  }
  const double c1 = bench::thread_cpu_seconds();
  if (sink == 0x5a) std::fputs("", stderr); // keep the hashes
  r.ops = n;
  r.ops_per_sample = block;
  r.value = static_cast<double>(n) / (c1 - c0);
  return r;
}

struct verify_run_result {
  bench::run r;
  double busy = 0; ///< process CPU time / wall time: the cores kept busy on average
};

verify_run_result verify_run(const audit_chain_fixture& fx, std::size_t rows, bool columns,
                             bool parallel) {
  store::sqlite_options so;
  so.path = fx.path;
  so.migrate = false;
  auto db = store::open_sqlite(so);
  if (!db) die("open: " + db.error().to_string());
  auto vo = parallel ? store::parallel_verify_options([&so] { return store::open_sqlite(so); })
                     : store::verify_options{};
  vo.check_columns = columns;
  const double c0 = process_cpu_seconds();
  const auto t0 = bench::clock::now();
  auto v = store::verify_chain(**db, vo);
  const auto t1 = bench::clock::now();
  const double cpu = process_cpu_seconds() - c0;
  if (!v) die("verify: " + v.error().to_string());
  if (!v->intact() || v->count != rows) die("verify: the chain is not intact: " + v->why);
  bench::run r;
  r.ops = rows;
  r.value = static_cast<double>(rows) / bench::seconds_between(t0, t1);
  return {r, cpu / bench::seconds_between(t0, t1)};
}

void bench_audit(int runs, std::size_t rows) {
  const auto used = cores(); // first_bad_row_parallel: one thread per core
  for (std::size_t size : {std::size_t{96}, std::size_t{128}, std::size_t{256}}) {
    auto fx = make_chain(rows, size);
    std::vector<bench::run> raw, cols, nocols, seq;
    std::vector<double> busy_cols, busy_nocols;
    for (int i = 0; i < runs; ++i) {
      raw.push_back(raw_sha_run(*fx));
      auto c = verify_run(*fx, rows, true, true);
      cols.push_back(c.r);
      busy_cols.push_back(c.busy);
      auto nc = verify_run(*fx, rows, false, true);
      nocols.push_back(nc.r);
      busy_nocols.push_back(nc.busy);
      seq.push_back(verify_run(*fx, rows, true, false).r);
    }
    auto b = bench::summarize(raw, bench::kind::rate, "records/s");
    b.extra = {"mb_s", b.median * static_cast<double>(size + 32) / 1e6};
    const std::string sz = std::to_string(size);
    const std::string base_name = "af::sha256 over the same bytes (32 + " + sz
                                  + " B per record), in memory, 1 core (thread CPU time)";
    std::optional<bench::target> t;
    if (size <= 128) t = bench::target{"median", ">=", 1e6};
    for (auto* v : {&cols, &nocols}) {
      const bool c = v == &cols;
      auto s = bench::summarize(*v, bench::kind::rate, "records/s");
      const std::string suffix = c ? "" : ".nocols";
      const std::string what = c ? "hash + link + columns (Protobuf parse), as `af audit verify`"
                                 : "hash + link, no column check";
      bench::emit("audit.verify." + sz + suffix,
                  "Audit verify, " + sz + " B records from SQLite, " + what + ", "
                      + std::to_string(used) + " cores",
                  s, &b, base_name, t,
                  std::to_string(rows) + " records per run; wall time, warm page cache; "
                      + bench::num(bench::median(c ? busy_cols : busy_nocols))
                      + " cores busy on average (process CPU time / wall time)");
      auto per_core = s;
      per_core.median /= static_cast<double>(used);
      per_core.p50 /= static_cast<double>(used);
      per_core.p99 /= static_cast<double>(used);
      per_core.min /= static_cast<double>(used);
      per_core.max /= static_cast<double>(used);
      per_core.unit = "records/s/core";
      bench::emit("audit.verify_per_core." + sz + suffix,
                  "Audit verify per core used (" + std::to_string(used) + "), " + sz + " B, "
                      + (c ? "with" : "without") + " the column check",
                  per_core, &b, base_name, bench::target{"ratio", ">=", 0.8});
    }
    auto s = bench::summarize(seq, bench::kind::rate, "records/s");
    s.extra.reset();
    bench::emit("audit.verify_1thread." + sz,
                "Audit verify, " + sz
                    + " B, with columns, on the calling thread only (verify_options{} defaults)",
                s, &b, base_name, std::nullopt, "informational: the library call's default");
  }
}

// --- 3. read-back
// ---------------------------------------------------------------------------------

constexpr std::size_t k_page = 1000;

void fill_stream(store::backend& db, const std::string& stream, std::size_t events) {
  std::uint64_t v = 0;
  while (v < events) {
    store::append_request req;
    req.stream = stream;
    req.tenant = "default";
    req.expected_version = v;
    const auto n = std::min<std::size_t>(1000, events - v);
    for (std::size_t i = 0; i < n; ++i)
      req.events.push_back({"bench.Event", filler(k_payload), {}});
    auto res = db.append_batch(std::span{&req, 1}, af::time_point{std::chrono::nanoseconds{1}});
    if (!res[0]) die("fill: " + res[0].error().to_string());
    v += n;
  }
}

bench::run read_direct(store::backend& db, const std::string& stream, std::size_t events) {
  bench::run r;
  std::size_t got = 0;
  const auto t0 = bench::clock::now();
  auto prev = t0;
  for (std::uint64_t from = 1;;) {
    auto page = db.read(stream, from, k_page);
    if (!page) die("read: " + page.error().to_string());
    if (page->empty()) break;
    got += page->size();
    from = page->back().version + 1;
    const auto now = bench::clock::now();
    r.samples.push_back(bench::seconds_between(prev, now));
    prev = now;
  }
  if (got != events) die("read back " + std::to_string(got) + " events");
  r.ops = got;
  r.ops_per_sample = k_page;
  r.value = static_cast<double>(got) / bench::seconds_between(t0, prev);
  return r;
}

bench::run read_journal(af::node& n, const std::string& stream, std::size_t events) {
  bench::run r;
  std::size_t got = 0;
  const auto t0 = bench::clock::now();
  auto prev = t0;
  af::v1::ReadRequest req;
  req.set_stream(stream);
  req.set_max(k_page);
  for (std::uint64_t from = 1;;) {
    req.set_from_version(from);
    auto page = n.ask<af::v1::ReadResult>(store::k_journal_agent, req, 30s);
    if (!page) die("journal read: " + page.error().to_string());
    if (page->events_size() == 0) break;
    got += static_cast<std::size_t>(page->events_size());
    from = page->events(page->events_size() - 1).version() + 1;
    const auto now = bench::clock::now();
    r.samples.push_back(bench::seconds_between(prev, now));
    prev = now;
  }
  if (got != events) die("journal read back " + std::to_string(got) + " events");
  r.ops = got;
  r.ops_per_sample = k_page;
  r.value = static_cast<double>(got) / bench::seconds_between(t0, prev);
  return r;
}

/// The same pages with plain sqlite3 calls: step and touch every column, build nothing.
bench::run read_raw_sqlite(const std::string& path, const std::string& stream, std::size_t events) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK)
    die("sqlite3_open_v2 failed");
  sqlite3_stmt* st = nullptr;
  const char* sql = "SELECT version, tenant, type, payload, envelope_hash, committed_at FROM events"
                    " WHERE stream_id = (SELECT id FROM streams WHERE stream = ?1)"
                    " AND version >= ?2 ORDER BY version LIMIT ?3";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) die("prepare failed");
  bench::run r;
  std::size_t got = 0, bytes = 0;
  const auto t0 = bench::clock::now();
  auto prev = t0;
  for (std::int64_t from = 1;;) {
    sqlite3_bind_text(st, 1, stream.data(), static_cast<int>(stream.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, from);
    sqlite3_bind_int64(st, 3, static_cast<std::int64_t>(k_page));
    std::size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
      from = sqlite3_column_int64(st, 0) + 1;
      for (int c = 1; c <= 4; ++c) {
        (void)sqlite3_column_blob(st, c);
        bytes += static_cast<std::size_t>(sqlite3_column_bytes(st, c));
      }
      (void)sqlite3_column_int64(st, 5);
      ++n;
    }
    sqlite3_reset(st);
    if (n == 0) break;
    got += n;
    const auto now = bench::clock::now();
    r.samples.push_back(bench::seconds_between(prev, now));
    prev = now;
  }
  sqlite3_finalize(st);
  sqlite3_close_v2(db);
  if (got != events || bytes == 0) die("raw read back " + std::to_string(got) + " events");
  r.ops = got;
  r.ops_per_sample = k_page;
  r.value = static_cast<double>(got) / bench::seconds_between(t0, prev);
  return r;
}

void bench_read(const store_kind& sk, int runs, std::size_t events) {
  auto in = sk.fresh();
  const std::string stream = "exec/read-back";
  {
    auto db = must_open(in);
    fill_stream(*db, stream, events);
  }
  store::journal_options jo;
  jo.open = in.open;
  auto n = start_node(jo);
  auto db = must_open(in);
  std::vector<bench::run> journal, direct, raw;
  for (int i = 0; i < runs; ++i) {
    journal.push_back(read_journal(*n, stream, events));
    direct.push_back(read_direct(*db, stream, events));
    if (sk.name == "sqlite") raw.push_back(read_raw_sqlite(in.dir->db(), stream, events));
  }
  n->shutdown();
  auto j = bench::summarize(journal, bench::kind::rate, "events/s");
  auto d = bench::summarize(direct, bench::kind::rate, "events/s");
  const std::string what = std::to_string(events / 1000)
                           + "k-event stream (100 B payloads), pages of " + std::to_string(k_page)
                           + ", " + sk.name;
  bench::emit("read." + sk.name + ".journal", "Read-back through af.journal ReadRequest, " + what,
              j, &d, "backend->read on the same store", std::nullopt,
              "node::ask from the main thread, one page per ask; warm cache");
  if (!raw.empty()) {
    auto rw = bench::summarize(raw, bench::kind::rate, "events/s");
    bench::emit("read." + sk.name + ".direct", "Read-back with backend->read, " + what, d, &rw,
                "raw sqlite3 prepared SELECT of the same pages (columns touched, nothing built)");
  } else {
    bench::emit("read." + sk.name + ".direct", "Read-back with backend->read, " + what, d);
  }
}

} // namespace

int main(int argc, char** argv) {
  const int runs = static_cast<int>(bench::int_option(argc, argv, "--runs", 5));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "all");
  const auto appenders = static_cast<std::size_t>(bench::int_option(argc, argv, "--appenders", 64));
  const auto each = static_cast<std::size_t>(bench::int_option(argc, argv, "--appends", 400));
  const auto base_count =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--baseline-appends", 1000));
  const auto audit_rows =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--audit-rows", 200'000));
  const auto read_events =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--read-events", 100'000));

  std::vector<store_kind> kinds{{"sqlite", {}}};
  if (const char* url = std::getenv("AF_TEST_PG_URL"); url != nullptr && *url != '\0')
    kinds.push_back({"postgres", url});
  else
    std::fprintf(stderr, "bench: AF_TEST_PG_URL not set: SQLite only\n");

  if (scenario == "all" || scenario == "journal")
    for (const auto& k : kinds)
      bench_journal(k, runs, appenders, each, base_count, k.name == "sqlite" ? 50'000 : 20'000);
  if (scenario == "all" || scenario == "audit") bench_audit(runs, audit_rows);
  if (scenario == "all" || scenario == "read")
    for (const auto& k : kinds)
      bench_read(k, runs, read_events);
  return 0;
}
