// Scenario 6: supervision restarts, each measured inside the actor system (no foreign-thread
// round trips) on a node logging at `info`, JSON, to a file (a fresh temporary file per run, so
// every figure includes the supervisor's rate-limited restart lines; the lines are counted and
// reported in the note), against a minimal hand-rolled bare-CAF supervisor (an event-based actor
// that monitors its children and respawns them on down_msg).
//
//  restart.latency.fail / .throw  one_for_one supervisor, one child. A prober agent looks the
//      child up, takes t0 (ctx.monotonic()), tells it to crash (ctx.fail / a handler that throws),
//      then looks the name up again and asks the instance it finds, yielding between attempts by
//      telling itself a message, until a *new* instance answers: t1. Samples are t1 - t0.
//  restart.sustained  one_for_one supervisor of 1,000 children (intensity never reached, no
//      backoff). Every child tells itself to crash (ctx.fail) as soon as it starts, so up to
//      1,000 crashes are in flight. Rate = completed restarts (an atomic counted in `recover`)
//      over a window after a warm-up; samples are the durations of 1,000 consecutive restarts.
//      The supervisor's own count (which_children) is checked against the atomic at the end.
//  restart.one_for_all  one_for_all supervisor of 1,000 children: a prober tells one child to
//      crash (ctx.fail) and scans all 1,000 names (lookup + ask, yielding between scans) until
//      every name answers from a new instance. The bare baseline stops the other children the
//      same way (one at a time, reverse start order, waiting for each down_msg) and starts all.
//
//   af_bench_restart [--runs 5] [--restarts 2000] [--warmup 200] [--seconds 2]
//                    [--children 1000] [--group-restarts 5]
//                    [--scenario latency|sustained|one_for_all]   (default: all three)
//   --variant agent|bare runs one side only and prints nothing: for profilers.
#include "bench_common.hpp"
#include "bench_systems.hpp"

#include "af/agent.hpp"
#include "af/sup/supervisor.hpp"

#include <caf/all.hpp>

#include <google/protobuf/wrappers.pb.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

using google::protobuf::Int64Value;
using google::protobuf::UInt64Value;
using namespace std::chrono_literals;

namespace {

// Commands a child understands (Int64Value / int64_t); values >= 0 are pings echoed back.
constexpr std::int64_t k_fail = -1;
constexpr std::int64_t k_throw = -2;
// Prober self-messages (UInt64Value / uint64_t).
constexpr std::uint64_t k_begin = 0;
constexpr std::uint64_t k_probe = 1;

constexpr auto k_ask_timeout = 5s;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench: %s\n", what.c_str());
  std::exit(1);
}

std::string child_name(std::size_t i) { return "c" + std::to_string(i); }

double us_of(af::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// --- the node: info level, JSON, to a temporary file -------------------------------------------

/// A fresh log file per run; counts the lines per event afterwards.
class log_file {
public:
  log_file() {
    char tmpl[] = "/tmp/af-bench-restart-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    if (fd < 0) die("mkstemp failed");
    ::close(fd);
    path_ = tmpl;
  }
  log_file(const log_file&) = delete;
  log_file& operator=(const log_file&) = delete;
  ~log_file() { ::unlink(path_.c_str()); }
  [[nodiscard]] const std::string& path() const { return path_; }

  [[nodiscard]] std::map<std::string, std::size_t> events() const {
    std::map<std::string, std::size_t> out;
    std::ifstream in{path_};
    for (std::string line; std::getline(in, line);) {
      const std::string key = "\"event\":\"";
      auto p = line.find(key);
      if (p == std::string::npos) continue;
      p += key.size();
      out[line.substr(p, line.find('"', p) - p)]++;
    }
    return out;
  }

private:
  std::string path_;
};

std::unique_ptr<af::node> start_logged_node(const log_file& lf) {
  af::node::options opt; // cfg = af::config::defaults()
  af::log_options lo;
  lo.level = af::log_level::info;
  lo.format = "json";
  lo.file = lf.path();
  auto backend = af::make_log_backend(lo);
  if (!backend) die("log backend: " + backend.error().to_string());
  opt.log = *backend;
  auto n = af::node::start(std::move(opt));
  if (!n) die("node start failed: " + n.error().to_string());
  return std::move(*n);
}

af::sup::supervisor_spec fast_spec(std::string name, af::sup::strategy how) {
  af::sup::supervisor_spec s;
  s.name = std::move(name);
  s.policy.how = how;
  s.policy.limits = {std::numeric_limits<std::uint32_t>::max(), std::chrono::seconds(1)};
  s.policy.delay.base = af::duration::zero(); // no backoff
  return s;
}

/// Log lines per run, summed over runs, per event.
struct log_tally {
  std::map<std::string, std::size_t> lines;
  std::size_t runs = 0;
  void add(const std::map<std::string, std::size_t>& ev) {
    for (auto& [k, v] : ev) lines[k] += v;
    ++runs;
  }
  [[nodiscard]] std::string per_run(const std::string& event) const {
    auto it = lines.find(event);
    const double v = it == lines.end() || runs == 0 ? 0.0
                                                    : static_cast<double>(it->second)
                                                          / static_cast<double>(runs);
    return bench::num(v);
  }
};

// --- bare CAF: a name registry like the node's (shared mutex + hash map) ------------------------

class bare_registry {
public:
  void put(const std::string& name, caf::actor a) {
    std::unique_lock g{mtx_};
    map_[name] = std::move(a);
  }
  [[nodiscard]] caf::actor get(const std::string& name) const {
    std::shared_lock g{mtx_};
    auto it = map_.find(name);
    return it == map_.end() ? caf::actor{} : it->second;
  }
  void clear() {
    std::unique_lock g{mtx_};
    map_.clear();
  }

private:
  mutable std::shared_mutex mtx_;
  std::unordered_map<std::string, caf::actor> map_;
};

using stop_atom = caf::atom_constant<caf::atom("stop")>;

// --- restart counting for the sustained scenario ----------------------------------------------

/// Crash-loop switch and completed-restart counter shared by all children of a run; every
/// `every`-th restart records a steady_clock stamp.
struct loop_state {
  static constexpr std::size_t every = 1000;
  static constexpr std::size_t max_stamps = 1 << 16; // 65M restarts
  std::atomic<bool> crash{true};
  std::atomic<std::uint64_t> restarts{0};
  std::unique_ptr<std::atomic<std::int64_t>[]> stamps{new std::atomic<std::int64_t>[max_stamps]};

  void note_restart() {
    const auto c = restarts.fetch_add(1, std::memory_order_relaxed);
    if (c % every == 0 && c / every < max_stamps)
      stamps[c / every].store(bench::clock::now().time_since_epoch().count(),
                              std::memory_order_relaxed);
  }
};

/// The rate run of one variant: a window [t0, t1] read by the main thread.
bench::run rate_of(loop_state& st, std::uint64_t c0, bench::clock::time_point t0,
                   std::uint64_t c1, bench::clock::time_point t1) {
  bench::run r;
  r.ops = c1 - c0;
  r.value = static_cast<double>(c1 - c0) / bench::seconds_between(t0, t1);
  r.ops_per_sample = loop_state::every;
  const auto lo = t0.time_since_epoch().count();
  const auto hi = t1.time_since_epoch().count();
  for (std::uint64_t k = c0 / loop_state::every + 1;
       (k + 1) * loop_state::every <= c1 && k + 1 < loop_state::max_stamps; ++k) {
    const auto a = st.stamps[k].load(std::memory_order_relaxed);
    const auto b = st.stamps[k + 1].load(std::memory_order_relaxed);
    if (a < lo || b > hi || b <= a) continue;
    r.samples.push_back(static_cast<double>(b - a) * 1e-9);
  }
  return r;
}

/// Waits until the counter has not moved for 100 ms.
void wait_quiet(const std::atomic<std::uint64_t>& c) {
  auto last = c.load();
  for (;;) {
    std::this_thread::sleep_for(100ms);
    auto now = c.load();
    if (now == last) return;
    last = now;
  }
}

// ================================================================================================
// Agents
// ================================================================================================

/// A supervised child: echoes pings, crashes on k_fail (ctx.fail) or k_throw (throws). With a
/// loop_state it counts its restarts and crashes itself as soon as it starts.
class child_agent : public af::agent_base<child_agent> {
public:
  explicit child_agent(loop_state* loop = nullptr) : loop_(loop) {}
  static void define(af::handlers<child_agent>& h) {
    h.kind("bench.child").on(&child_agent::cmd);
  }
  void recover(af::context&, const af::restart_info&) override {
    if (loop_ != nullptr) loop_->note_restart();
  }
  void on_start(af::context& ctx) override {
    if (loop_ != nullptr && loop_->crash.load(std::memory_order_relaxed)) {
      Int64Value v;
      v.set_value(k_fail);
      ctx.tell(ctx.self_ref(), v);
    }
  }
  af::expected<Int64Value> cmd(af::context& ctx, const Int64Value& v) {
    if (v.value() == k_fail) ctx.fail(af::error{af::errc::transient, "bench crash"});
    if (v.value() == k_throw) throw std::runtime_error("bench crash");
    return v;
  }

private:
  loop_state* loop_;
};

struct latency_job {
  std::int64_t mode = k_fail;
  std::size_t warmup = 0;
  std::size_t n = 0;
  std::vector<double> samples_us;
  std::promise<void> done;
};

/// Scenario 1's prober (see the top of the file).
class latency_prober : public af::agent_base<latency_prober> {
public:
  explicit latency_prober(latency_job* job) : job_(job) {}
  static void define(af::handlers<latency_prober>& h) {
    h.kind("bench.prober").on(&latency_prober::tick);
  }
  void tick(af::context& ctx, const UInt64Value& v) {
    if (v.value() == k_begin)
      crash(ctx);
    else
      probe(ctx);
  }

private:
  void crash(af::context& ctx) {
    auto r = ctx.lookup("victim");
    if (!r) die("victim: " + r.error().to_string());
    old_ = *r;
    Int64Value cmd;
    cmd.set_value(job_->mode);
    t0_ = ctx.monotonic();
    ctx.tell(old_, cmd);
    probe(ctx);
  }

  void probe(af::context& ctx) {
    auto r = ctx.lookup("victim");
    if (!r || *r == old_) return yield(ctx);
    Int64Value ping;
    ping.set_value(static_cast<std::int64_t>(i_));
    ctx.ask<Int64Value>(*r, ping, k_ask_timeout, [this, &ctx](af::expected<Int64Value> rep) {
      if (!rep || rep->value() != static_cast<std::int64_t>(i_)) return yield(ctx);
      const auto t1 = ctx.monotonic();
      if (i_ >= job_->warmup) job_->samples_us.push_back(us_of(t1 - t0_));
      if (++i_ == job_->warmup + job_->n) {
        job_->done.set_value();
        return;
      }
      crash(ctx);
    });
  }

  void yield(af::context& ctx) {
    UInt64Value v;
    v.set_value(k_probe);
    ctx.tell(ctx.self_ref(), v);
  }

  latency_job* job_;
  af::agent_ref old_;
  std::size_t i_ = 0;
  af::duration t0_{};
};

struct group_job {
  std::size_t children = 0;
  std::size_t warmup = 0;
  std::size_t n = 0;
  std::vector<double> samples_ms;
  std::promise<void> done;
};

/// Scenario 3's prober: crash one child, then scan all names until every one answers from a new
/// instance.
class group_prober : public af::agent_base<group_prober> {
public:
  explicit group_prober(group_job* job) : job_(job) {
    for (std::size_t i = 0; i < job->children; ++i) names_.push_back(child_name(i));
    old_.resize(job->children);
    ok_.resize(job->children);
    inflight_.resize(job->children);
  }
  static void define(af::handlers<group_prober>& h) {
    h.kind("bench.group_prober").on(&group_prober::tick);
  }
  void tick(af::context& ctx, const UInt64Value& v) {
    if (v.value() == k_begin) return crash(ctx);
    scan_pending_ = false;
    scan(ctx);
  }

private:
  void crash(af::context& ctx) {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      auto r = ctx.lookup(names_[i]);
      if (!r) die(names_[i] + ": " + r.error().to_string());
      old_[i] = *r;
      ok_[i] = false;
      inflight_[i] = false;
    }
    confirmed_ = 0;
    ++round_;
    Int64Value cmd;
    cmd.set_value(k_fail);
    t0_ = ctx.monotonic();
    ctx.tell(old_[names_.size() / 2], cmd);
    scan(ctx);
  }

  void scan(af::context& ctx) {
    bool retry = false;
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (ok_[i] || inflight_[i]) continue;
      auto r = ctx.lookup(names_[i]);
      if (!r || *r == old_[i]) {
        retry = true;
        continue;
      }
      inflight_[i] = true;
      Int64Value ping;
      ping.set_value(static_cast<std::int64_t>(i));
      ctx.ask<Int64Value>(*r, ping, k_ask_timeout,
                          [this, &ctx, i, round = round_](af::expected<Int64Value> rep) {
                            if (round != round_) return;
                            inflight_[i] = false;
                            if (rep && rep->value() == static_cast<std::int64_t>(i)) {
                              ok_[i] = true;
                              if (++confirmed_ == names_.size()) finish(ctx);
                            } else {
                              yield(ctx);
                            }
                          });
    }
    if (retry) yield(ctx);
  }

  void finish(af::context& ctx) {
    const auto t1 = ctx.monotonic();
    if (done_ >= job_->warmup)
      job_->samples_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0_).count());
    if (++done_ == job_->warmup + job_->n) {
      ++round_;
      job_->done.set_value();
      return;
    }
    crash(ctx);
  }

  void yield(af::context& ctx) {
    if (scan_pending_) return;
    scan_pending_ = true;
    UInt64Value v;
    v.set_value(k_probe);
    ctx.tell(ctx.self_ref(), v);
  }

  group_job* job_;
  std::vector<std::string> names_;
  std::vector<af::agent_ref> old_;
  std::vector<bool> ok_, inflight_;
  std::size_t confirmed_ = 0;
  std::size_t done_ = 0;
  std::uint64_t round_ = 0;
  bool scan_pending_ = false;
  af::duration t0_{};
};

// ================================================================================================
// Bare CAF
// ================================================================================================

/// What a bare child and its supervisor share: the registry and (sustained) the crash loop.
struct bare_env {
  bare_registry reg;
  loop_state* loop = nullptr;
};

caf::behavior bare_child(caf::event_based_actor* self, bare_env* env, bool restarted) {
  // An exception is an abnormal exit, silently (CAF's default handler would print it).
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr&) -> caf::error {
    return caf::make_error(caf::sec::runtime_error);
  });
  if (env->loop != nullptr) {
    if (restarted) env->loop->note_restart();
    if (env->loop->crash.load(std::memory_order_relaxed)) self->send(self, k_fail);
  }
  return {[self](std::int64_t v) -> std::int64_t {
    if (v == k_fail) self->quit(caf::make_error(caf::sec::runtime_error));
    if (v == k_throw) throw std::runtime_error("bench crash");
    return v;
  }};
}

/// A minimal supervisor: spawns `n` children (registered as c0..c<n-1>), monitors them and
/// respawns a child on its down_msg (one_for_one); for one_for_all it stops the other children
/// one at a time in reverse start order (exit + wait for the down_msg), then spawns all again.
class bare_supervisor : public caf::event_based_actor {
public:
  bare_supervisor(caf::actor_config& cfg, bare_env* env, std::size_t n, bool one_for_all)
      : caf::event_based_actor(cfg), env_(env), one_for_all_(one_for_all), children_(n) {
    for (std::size_t i = 0; i < n; ++i) names_.push_back(child_name(i));
  }

  caf::behavior make_behavior() override {
    set_down_handler([this](caf::down_msg& m) { on_down(m); });
    for (std::size_t i = 0; i < children_.size(); ++i) start(i, false);
    return {[this](stop_atom) {
      shutting_down_ = true;
      for (auto& c : children_)
        if (c) anon_send_exit(c, caf::exit_reason::kill);
      quit();
    }};
  }

private:
  void start(std::size_t i, bool restarted) {
    auto a = spawn(bare_child, env_, restarted);
    monitor(a);
    index_[a.id()] = i;
    env_->reg.put(names_[i], a);
    children_[i] = std::move(a);
  }

  void on_down(caf::down_msg& m) {
    if (shutting_down_) return;
    auto it = index_.find(m.source.id());
    if (it == index_.end()) return;
    const auto i = it->second;
    index_.erase(it);
    children_[i] = nullptr;
    if (!one_for_all_) {
      start(i, true);
      return;
    }
    if (!stopping_) { // a crash: stop the others in reverse order
      stopping_ = true;
      order_.clear();
      for (std::size_t j = children_.size(); j-- > 0;)
        if (children_[j]) order_.push_back(j);
      next_ = 0;
    } else {
      ++next_; // the child we were waiting for
    }
    if (next_ < order_.size()) {
      anon_send_exit(children_[order_[next_]], caf::exit_reason::user_shutdown);
      return;
    }
    stopping_ = false;
    for (std::size_t j = 0; j < children_.size(); ++j) start(j, true);
  }

  bare_env* env_;
  bool one_for_all_;
  std::vector<caf::actor> children_;
  std::vector<std::string> names_;
  std::unordered_map<caf::actor_id, std::size_t> index_;
  bool stopping_ = false;
  bool shutting_down_ = false;
  std::vector<std::size_t> order_;
  std::size_t next_ = 0;
};

/// Scenario 1's prober, bare: the same protocol through the bare registry and CAF requests.
class bare_latency_prober : public caf::event_based_actor {
public:
  bare_latency_prober(caf::actor_config& cfg, bare_env* env, latency_job* job)
      : caf::event_based_actor(cfg), env_(env), job_(job) {}

  caf::behavior make_behavior() override {
    return {[this](std::uint64_t v) {
      if (v == k_begin)
        crash();
      else
        probe();
    }};
  }

private:
  void crash() {
    old_ = env_->reg.get("c0");
    if (!old_) die("bare victim missing");
    t0_ = bench::clock::now();
    send(old_, job_->mode);
    probe();
  }

  void probe() {
    auto a = env_->reg.get("c0");
    if (!a || a == old_) return yield();
    request(a, caf::infinite, static_cast<std::int64_t>(i_))
        .then(
            [this](std::int64_t v) {
              if (v != static_cast<std::int64_t>(i_)) return yield();
              const auto t1 = bench::clock::now();
              if (i_ >= job_->warmup)
                job_->samples_us.push_back(bench::seconds_between(t0_, t1) * 1e6);
              if (++i_ == job_->warmup + job_->n) {
                job_->done.set_value();
                return;
              }
              crash();
            },
            [this](caf::error&) { yield(); });
  }

  void yield() { send(this, k_probe); }

  bare_env* env_;
  latency_job* job_;
  caf::actor old_;
  std::size_t i_ = 0;
  bench::clock::time_point t0_;
};

/// Scenario 3's prober, bare.
class bare_group_prober : public caf::event_based_actor {
public:
  bare_group_prober(caf::actor_config& cfg, bare_env* env, group_job* job)
      : caf::event_based_actor(cfg), env_(env), job_(job), old_(job->children),
        ok_(job->children), inflight_(job->children) {
    for (std::size_t i = 0; i < job->children; ++i) names_.push_back(child_name(i));
  }

  caf::behavior make_behavior() override {
    return {[this](std::uint64_t v) {
      if (v == k_begin) return crash();
      scan_pending_ = false;
      scan();
    }};
  }

private:
  void crash() {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      old_[i] = env_->reg.get(names_[i]);
      if (!old_[i]) die("bare child missing");
      ok_[i] = false;
      inflight_[i] = false;
    }
    confirmed_ = 0;
    ++round_;
    t0_ = bench::clock::now();
    send(old_[names_.size() / 2], k_fail);
    scan();
  }

  void scan() {
    bool retry = false;
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (ok_[i] || inflight_[i]) continue;
      auto a = env_->reg.get(names_[i]);
      if (!a || a == old_[i]) {
        retry = true;
        continue;
      }
      inflight_[i] = true;
      request(a, caf::infinite, static_cast<std::int64_t>(i))
          .then(
              [this, i, round = round_](std::int64_t v) {
                if (round != round_) return;
                inflight_[i] = false;
                if (v == static_cast<std::int64_t>(i)) {
                  ok_[i] = true;
                  if (++confirmed_ == names_.size()) finish();
                } else {
                  yield();
                }
              },
              [this, i, round = round_](caf::error&) {
                if (round != round_) return;
                inflight_[i] = false;
                yield();
              });
    }
    if (retry) yield();
  }

  void finish() {
    const auto t1 = bench::clock::now();
    if (done_ >= job_->warmup) job_->samples_ms.push_back(bench::seconds_between(t0_, t1) * 1e3);
    if (++done_ == job_->warmup + job_->n) {
      ++round_;
      job_->done.set_value();
      return;
    }
    crash();
  }

  void yield() {
    if (scan_pending_) return;
    scan_pending_ = true;
    send(this, k_probe);
  }

  bare_env* env_;
  group_job* job_;
  std::vector<caf::actor> old_;
  std::vector<bool> ok_, inflight_;
  std::vector<std::string> names_;
  std::size_t confirmed_ = 0;
  std::size_t done_ = 0;
  std::uint64_t round_ = 0;
  bool scan_pending_ = false;
  bench::clock::time_point t0_;
};

// ================================================================================================
// Runs
// ================================================================================================

struct options {
  std::size_t runs = 5;
  std::size_t restarts = 2000;
  std::size_t warmup = 200;
  double seconds = 2;
  double warmup_seconds = 0.5;
  std::size_t children = 1000;
  std::size_t group_restarts = 5;
  std::size_t group_warmup = 1;
};

void start_supervisor(af::node& n, af::sup::supervisor_spec spec) {
  if (auto r = n.start_child(af::sup::supervisor_child(std::move(spec))); !r)
    die("supervisor start: " + r.error().to_string());
}

/// Waits until every child name is bound (the supervisor starts its children asynchronously).
void wait_bound(af::node& n, std::size_t children) {
  for (std::size_t i = 0; i < children; ++i)
    while (!n.lookup(child_name(i))) std::this_thread::sleep_for(1ms);
}

void wait_bound(const bare_registry& reg, std::size_t children) {
  for (std::size_t i = 0; i < children; ++i)
    while (!reg.get(child_name(i))) std::this_thread::sleep_for(1ms);
}

// --- scenario 1 -------------------------------------------------------------------------------

bench::run latency_agent(const options& o, std::int64_t mode, log_tally* logs) {
  latency_job job;
  job.mode = mode;
  job.warmup = o.warmup;
  job.n = o.restarts;
  job.samples_us.reserve(o.restarts);
  auto fut = job.done.get_future();
  log_file lf;
  {
    auto node = start_logged_node(lf);
    auto spec = fast_spec("bench.one", af::sup::strategy::one_for_one);
    spec.children.push_back(af::sup::agent_child<child_agent>("victim"));
    start_supervisor(*node, std::move(spec));
    while (!node->lookup("victim")) std::this_thread::sleep_for(1ms);
    auto prober = node->spawn<latency_prober>("prober", &job);
    if (!prober) die("prober: " + prober.error().to_string());
    UInt64Value go;
    go.set_value(k_begin);
    node->tell(*prober, go);
    fut.wait();
  }
  if (logs != nullptr) logs->add(lf.events());
  return {bench::median(job.samples_us), std::move(job.samples_us), 1, o.restarts};
}

bench::run latency_bare(const options& o, std::int64_t mode) {
  latency_job job;
  job.mode = mode;
  job.warmup = o.warmup;
  job.n = o.restarts;
  job.samples_us.reserve(o.restarts);
  auto fut = job.done.get_future();
  {
    bench::bare_config cfg;
    caf::actor_system sys{cfg};
    bare_env env;
    auto sup = sys.spawn<bare_supervisor>(&env, std::size_t{1}, false);
    wait_bound(env.reg, 1);
    auto prober = sys.spawn<bare_latency_prober>(&env, &job);
    caf::anon_send(prober, k_begin);
    fut.wait();
    caf::anon_send_exit(prober, caf::exit_reason::user_shutdown);
    caf::anon_send(sup, stop_atom::value);
    sys.await_all_actors_done();
    env.reg.clear();
  }
  return {bench::median(job.samples_us), std::move(job.samples_us), 1, o.restarts};
}

// --- scenario 2 -------------------------------------------------------------------------------

struct sustained_result {
  bench::run run;
  std::uint64_t total = 0;         // completed restarts (the atomic), whole run
  std::uint64_t supervisor = 0;    // restarts the supervisor reports (agent only)
};

sustained_result sustained_agent(const options& o, log_tally* logs) {
  loop_state st;
  sustained_result out;
  log_file lf;
  {
    auto node = start_logged_node(lf);
    auto spec = fast_spec("bench.loop", af::sup::strategy::one_for_one);
    for (std::size_t i = 0; i < o.children; ++i)
      spec.children.push_back(af::sup::agent_child<child_agent>(child_name(i), &st));
    start_supervisor(*node, std::move(spec));
    std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup_seconds));
    const auto c0 = st.restarts.load();
    const auto t0 = bench::clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    const auto c1 = st.restarts.load();
    const auto t1 = bench::clock::now();
    st.crash = false;
    wait_quiet(st.restarts);
    out.run = rate_of(st, c0, t0, c1, t1);
    out.total = st.restarts.load();
    auto sup = af::sup::supervisor_ref::find(*node, "bench.loop");
    if (!sup) die("bench.loop: " + sup.error().to_string());
    auto w = sup->which_children();
    if (!w) die("which_children: " + w.error().to_string());
    for (const auto& c : w->children()) out.supervisor += c.restarts();
  }
  if (logs != nullptr) logs->add(lf.events());
  return out;
}

sustained_result sustained_bare(const options& o) {
  loop_state st;
  sustained_result out;
  {
    bench::bare_config cfg;
    caf::actor_system sys{cfg};
    bare_env env;
    env.loop = &st;
    auto sup = sys.spawn<bare_supervisor>(&env, o.children, false);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup_seconds));
    const auto c0 = st.restarts.load();
    const auto t0 = bench::clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    const auto c1 = st.restarts.load();
    const auto t1 = bench::clock::now();
    st.crash = false;
    wait_quiet(st.restarts);
    out.run = rate_of(st, c0, t0, c1, t1);
    out.total = st.restarts.load();
    caf::anon_send(sup, stop_atom::value);
    sys.await_all_actors_done();
    env.reg.clear();
  }
  return out;
}

// --- scenario 3 -------------------------------------------------------------------------------

bench::run group_agent(const options& o, log_tally* logs) {
  group_job job;
  job.children = o.children;
  job.warmup = o.group_warmup;
  job.n = o.group_restarts;
  auto fut = job.done.get_future();
  log_file lf;
  {
    auto node = start_logged_node(lf);
    auto spec = fast_spec("bench.all", af::sup::strategy::one_for_all);
    for (std::size_t i = 0; i < o.children; ++i)
      spec.children.push_back(af::sup::agent_child<child_agent>(child_name(i)));
    start_supervisor(*node, std::move(spec));
    wait_bound(*node, o.children);
    auto prober = node->spawn<group_prober>("prober", &job);
    if (!prober) die("prober: " + prober.error().to_string());
    UInt64Value go;
    go.set_value(k_begin);
    node->tell(*prober, go);
    fut.wait();
  }
  if (logs != nullptr) logs->add(lf.events());
  return {bench::median(job.samples_ms), std::move(job.samples_ms), 1, o.group_restarts};
}

bench::run group_bare(const options& o) {
  group_job job;
  job.children = o.children;
  job.warmup = o.group_warmup;
  job.n = o.group_restarts;
  auto fut = job.done.get_future();
  {
    bench::bare_config cfg;
    caf::actor_system sys{cfg};
    bare_env env;
    auto sup = sys.spawn<bare_supervisor>(&env, o.children, true);
    wait_bound(env.reg, o.children);
    auto prober = sys.spawn<bare_group_prober>(&env, &job);
    caf::anon_send(prober, k_begin);
    fut.wait();
    caf::anon_send_exit(prober, caf::exit_reason::user_shutdown);
    caf::anon_send(sup, stop_atom::value);
    sys.await_all_actors_done();
    env.reg.clear();
  }
  return {bench::median(job.samples_ms), std::move(job.samples_ms), 1, o.group_restarts};
}

std::string log_note(const log_tally& t, const std::vector<std::string>& events) {
  std::string s = "log lines per run (info, JSON, to a file):";
  for (const auto& e : events) {
    s += ' ';
    s += t.per_run(e);
    s += ' ';
    s += e;
    s += ',';
  }
  s.pop_back();
  return s;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  o.runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  o.restarts = static_cast<std::size_t>(bench::int_option(argc, argv, "--restarts", 2000));
  o.warmup = static_cast<std::size_t>(bench::int_option(argc, argv, "--warmup", 200));
  o.seconds = static_cast<double>(bench::int_option(argc, argv, "--seconds", 2));
  o.children = static_cast<std::size_t>(bench::int_option(argc, argv, "--children", 1000));
  o.group_restarts =
      static_cast<std::size_t>(bench::int_option(argc, argv, "--group-restarts", 5));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "");
  const auto only = bench::string_option(argc, argv, "--variant", "");
  const bool agent_side = only.empty() || only == "agent";
  const bool bare_side = only.empty() || only == "bare";
  const bool quiet = !only.empty();
  auto wanted = [&](const char* s) { return scenario.empty() || scenario == s; };
  const auto kids = std::to_string(o.children);

  if (wanted("latency")) {
    std::vector<bench::run> af_fail, bare_fail, af_throw, bare_throw;
    log_tally lf, lt;
    for (std::size_t r = 0; r < o.runs; ++r) { // interleaved, so drift hits all variants alike
      if (agent_side) af_fail.push_back(latency_agent(o, k_fail, &lf));
      if (bare_side) bare_fail.push_back(latency_bare(o, k_fail));
      if (agent_side) af_throw.push_back(latency_agent(o, k_throw, &lt));
      if (bare_side) bare_throw.push_back(latency_bare(o, k_throw));
    }
    if (!quiet) {
      auto a = bench::summarize(af_fail, bench::kind::latency, "us");
      auto b = bench::summarize(bare_fail, bench::kind::latency, "us");
      auto at = bench::summarize(af_throw, bench::kind::latency, "us");
      auto bt = bench::summarize(bare_throw, bench::kind::latency, "us");
      const std::vector<std::string> ev{"child_restarting", "agent_crashed"};
      bench::emit("restart.latency.fail",
                  "Restart latency, one_for_one: ctx.fail -> restarted child answers an ask", a,
                  &b, "bare CAF: quit(error) -> monitor/respawn -> request answered",
                  bench::target{"median", "<", 50},
                  "restarts measured per run: " + std::to_string(o.restarts) + " (after "
                      + std::to_string(o.warmup) + " warm-up); " + log_note(lf, ev));
      bench::emit("restart.latency.throw",
                  "Restart latency, one_for_one: handler throws -> restarted child answers an ask",
                  at, &bt, "bare CAF: handler throws -> monitor/respawn -> request answered",
                  bench::target{"median", "<", 50}, log_note(lt, ev));
    }
  }

  if (wanted("sustained")) {
    std::vector<bench::run> af_runs, bare_runs;
    log_tally logs;
    std::uint64_t mismatch = 0;
    for (std::size_t r = 0; r < o.runs; ++r) {
      if (agent_side) {
        auto a = sustained_agent(o, &logs);
        if (a.total != a.supervisor) {
          std::fprintf(stderr,
                       "bench: restart.sustained: supervisor reports %llu restarts, children "
                       "counted %llu\n",
                       static_cast<unsigned long long>(a.supervisor),
                       static_cast<unsigned long long>(a.total));
          ++mismatch;
        }
        af_runs.push_back(std::move(a.run));
      }
      if (bare_side) bare_runs.push_back(sustained_bare(o).run);
    }
    if (!quiet) {
      auto a = bench::summarize(af_runs, bench::kind::rate, "restarts/s");
      auto b = bench::summarize(bare_runs, bench::kind::rate, "restarts/s");
      bench::emit("restart.sustained",
                  "Sustained restarts, one_for_one supervisor of " + kids
                      + " children that crash (ctx.fail) as soon as they start",
                  a, &b, "bare CAF: monitor + respawn on down_msg, same children",
                  bench::target{"median", ">=", 100000},
                  std::to_string(static_cast<int>(o.seconds)) + " s window after "
                      + bench::num(o.warmup_seconds) + " s warm-up; supervisor's restart count "
                      + (mismatch == 0 ? "matched" : "did NOT match")
                      + " the children's in every run; "
                      + log_note(logs, {"child_restarting", "child_start_failed"}));
    }
  }

  if (wanted("one_for_all")) {
    std::vector<bench::run> af_runs, bare_runs;
    log_tally logs;
    for (std::size_t r = 0; r < o.runs; ++r) {
      if (agent_side) af_runs.push_back(group_agent(o, &logs));
      if (bare_side) bare_runs.push_back(group_bare(o));
    }
    if (!quiet) {
      auto a = bench::summarize(af_runs, bench::kind::latency, "ms");
      auto b = bench::summarize(bare_runs, bench::kind::latency, "ms");
      bench::emit("restart.one_for_all",
                  "one_for_all of " + kids + " children: one crash -> all " + kids
                      + " restarted children answer",
                  a, &b,
                  "bare CAF: stop the others one by one (reverse order), respawn all",
                  std::nullopt,
                  "group restarts measured per run: " + std::to_string(o.group_restarts)
                      + " (after " + std::to_string(o.group_warmup) + " warm-up); "
                      + log_note(logs, {"child_restarting"}));
    }
  }
  return 0;
}
