// Scenario 6: supervision restarts, each measured inside the actor system (no foreign-thread
// round trips) on a node logging at `info`, JSON, to a file (a fresh temporary file per run, so
// every figure includes the restart lines; the lines are counted and reported in the note),
// against a minimal hand-rolled bare-CAF supervisor (an event-based actor that monitors its
// children and respawns them on down_msg; bare children register themselves in a shared-mutex
// map when they start, as an agent is bound to its name before it runs).
//
//  restart.latency.{fail,throw}[.notify]  one_for_one supervisor, one child. A prober agent
//      looks the child up, takes t0 (ctx.monotonic()), tells it to crash (ctx.fail, or a handler
//      that throws) and takes t1 when a *new* instance answers an ask. Poll (as specified): look
//      the name up and ask the instance found, yielding between attempts by telling itself a
//      message. Notify (.notify): every instance tells the prober its name from on_start; the
//      prober then looks it up and asks. The poll figure is dominated by CAF's scheduling: the
//      spinning prober never leaves its worker (CAF's default max-throughput is unlimited), so
//      everything it sends waits until the other worker steals it (docs/benchmarks.md).
//  restart.sustained[.throw]  one_for_one supervisor of 1,000 children (intensity never
//      reached, no backoff). Every child tells itself to crash as soon as it starts, so up to
//      1,000 crashes are in flight. Rate = completed restarts (an atomic counted in `recover`)
//      over a window after a warm-up; samples are the durations of 1,000 consecutive restarts.
//      The supervisor's own count (which_children) is checked against the atomic at the end.
//  restart.one_for_all[.notify]  one_for_all supervisor of 1,000 children: the prober crashes
//      the middle one (ctx.fail) and takes t1 when all 1,000 names answer from new instances
//      (poll: scan all names, yield, scan again; notify: as above). The bare baseline stops the
//      other children like ours (one at a time, reverse start order, waiting for each down_msg)
//      and starts all again.
//
//   af_bench_restart [--runs 5] [--restarts 2000] [--warmup 200] [--seconds 2]
//                    [--children 1000] [--group-restarts 5]
//                    [--scenario latency|sustained|one_for_all]   (default: all three)
//                    [--probe poll|notify] (latency, one_for_all) [--crash fail|throw] (latency,
//                    sustained); default: all
//   --variant agent|bare runs one side only and prints one line per run on stderr instead of
//   JSON: for profilers.
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
using google::protobuf::StringValue;
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

using bench::die;

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
    for (auto& [k, v] : ev)
      lines[k] += v;
    ++runs;
  }
  [[nodiscard]] std::string per_run(const std::string& event) const {
    auto it = lines.find(event);
    const double v = it == lines.end() || runs == 0
                         ? 0.0
                         : static_cast<double>(it->second) / static_cast<double>(runs);
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
using fail_atom = caf::atom_constant<caf::atom("fail")>;
using throw_atom = caf::atom_constant<caf::atom("throw")>;

// --- restart counting for the sustained scenario ----------------------------------------------

/// Crash-loop switch and completed-restart counter shared by all children of a run; every
/// `every`-th restart records a steady_clock stamp.
struct loop_state {
  static constexpr std::size_t every = 1000;
  static constexpr std::size_t max_stamps = 1 << 16; // 65M restarts
  std::int64_t mode = k_fail;                        // how every instance crashes itself
  std::atomic<bool> crash{true};
  std::atomic<std::uint64_t> restarts{0};
  std::unique_ptr<std::atomic<std::int64_t>[]> stamps {
    new std::atomic<std::int64_t>[ max_stamps ]
  };

  void note_restart() {
    const auto c = restarts.fetch_add(1, std::memory_order_relaxed);
    if (c % every == 0 && c / every < max_stamps)
      stamps[c / every].store(bench::clock::now().time_since_epoch().count(),
                              std::memory_order_relaxed);
  }
};

/// The rate run of one variant: a window [t0, t1] read by the main thread.
bench::run rate_of(loop_state& st, std::uint64_t c0, bench::clock::time_point t0, std::uint64_t c1,
                   bench::clock::time_point t1) {
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

/// A supervised child: echoes pings, crashes on k_fail (ctx.fail) or k_throw (throws). With
/// `notify`, every instance tells that agent its name when it starts; with a loop_state it counts
/// its restarts and crashes itself as soon as it starts.
class child_agent : public af::agent_base<child_agent> {
public:
  explicit child_agent(loop_state* loop = nullptr, std::string notify = {})
      : loop_(loop), notify_(std::move(notify)) {}
  static void define(af::handlers<child_agent>& h) { h.kind("bench.child").on(&child_agent::cmd); }
  void recover(af::context&, const af::restart_info&) override {
    if (loop_ != nullptr) loop_->note_restart();
  }
  void on_start(af::context& ctx) override {
    if (!notify_.empty()) {
      StringValue up;
      up.set_value(ctx.name());
      (void)ctx.tell(notify_, up);
    }
    if (loop_ != nullptr && loop_->crash.load(std::memory_order_relaxed)) {
      Int64Value v;
      v.set_value(loop_->mode);
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
  std::string notify_;
};

/// What a prober measures: `children` children named c0..c<n-1>; the middle one (c0 for one
/// child) is crashed with `mode`; a sample is the time until every name answers an ask from a
/// new instance.
struct probe_job {
  std::size_t children = 1;
  std::int64_t mode = k_fail;
  /// false: poll (scan lookup + ask, yield by telling itself a message, scan again);
  /// true: wait for each new instance's start notification, then look it up and ask it.
  bool notify = false;
  std::size_t warmup = 0;
  std::size_t n = 0;
  std::vector<double> samples_us;
  std::promise<void> done;
};

/// The shared state machine of both probers; `Self` provides lookup(i), same(a, b),
/// ask(i, handle, round), crash(handle), yield(), now() and the handle type.
template <class Handle>
struct probe_state {
  explicit probe_state(probe_job* j)
      : job(j), old(j->children), ok(j->children), inflight(j->children) {
    for (std::size_t i = 0; i < j->children; ++i) {
      names.push_back(child_name(i));
      index.emplace(names.back(), i);
    }
  }
  probe_job* job;
  std::vector<std::string> names;
  std::unordered_map<std::string, std::size_t> index;
  std::vector<Handle> old;
  std::vector<bool> ok, inflight;
  std::size_t confirmed = 0;
  std::size_t rounds_done = 0;
  std::uint64_t round = 0;
  bool active = false;
  bool scan_pending = false;
};

class prober_agent : public af::agent_base<prober_agent> {
public:
  explicit prober_agent(probe_job* job) : st_(job) {}
  static void define(af::handlers<prober_agent>& h) {
    h.kind("bench.prober").on(&prober_agent::tick).on(&prober_agent::up);
  }
  void tick(af::context& ctx, const UInt64Value& v) {
    if (v.value() == k_begin) return crash(ctx);
    st_.scan_pending = false;
    scan(ctx);
  }
  void up(af::context& ctx, const StringValue& name) {
    if (!st_.active) return;
    if (auto it = st_.index.find(name.value()); it != st_.index.end()) try_one(ctx, it->second);
  }

private:
  void crash(af::context& ctx) {
    for (std::size_t i = 0; i < st_.names.size(); ++i) {
      auto r = ctx.lookup(st_.names[i]);
      if (!r) die(st_.names[i] + ": " + r.error().to_string());
      st_.old[i] = *r;
      st_.ok[i] = false;
      st_.inflight[i] = false;
    }
    st_.confirmed = 0;
    ++st_.round;
    st_.active = true;
    Int64Value cmd;
    cmd.set_value(st_.job->mode);
    t0_ = ctx.monotonic();
    ctx.tell(st_.old[st_.names.size() / 2], cmd);
    if (!st_.job->notify) scan(ctx);
  }

  void scan(af::context& ctx) {
    if (!st_.active) return;
    bool retry = false;
    for (std::size_t i = 0; i < st_.names.size() && st_.active; ++i)
      if (!try_one(ctx, i)) retry = true;
    if (retry) yield(ctx);
  }

  /// Asks child i if a new instance is bound; false when it has to be tried again.
  bool try_one(af::context& ctx, std::size_t i) {
    if (st_.ok[i] || st_.inflight[i]) return true;
    auto r = ctx.lookup(st_.names[i]);
    if (!r || *r == st_.old[i]) return false;
    st_.inflight[i] = true;
    Int64Value ping;
    ping.set_value(static_cast<std::int64_t>(i));
    ctx.ask<Int64Value>(*r, ping, k_ask_timeout,
                        [this, &ctx, i, round = st_.round](af::expected<Int64Value> rep) {
                          if (round != st_.round) return;
                          st_.inflight[i] = false;
                          if (!rep || rep->value() != static_cast<std::int64_t>(i)) {
                            if (st_.job->notify)
                              die("ask failed: a restarted child did not answer");
                            return yield(ctx);
                          }
                          st_.ok[i] = true;
                          if (++st_.confirmed == st_.names.size()) finish(ctx);
                        });
    return true;
  }

  void finish(af::context& ctx) {
    const auto t1 = ctx.monotonic();
    st_.active = false;
    auto* job = st_.job;
    if (st_.rounds_done >= job->warmup) job->samples_us.push_back(us_of(t1 - t0_));
    if (++st_.rounds_done == job->warmup + job->n) {
      ++st_.round;
      job->done.set_value();
      return;
    }
    crash(ctx);
  }

  void yield(af::context& ctx) {
    if (st_.job->notify || st_.scan_pending) return;
    st_.scan_pending = true;
    UInt64Value v;
    v.set_value(k_probe);
    ctx.tell(ctx.self_ref(), v);
  }

  probe_state<af::agent_ref> st_;
  af::duration t0_{};
};

// ================================================================================================
// Bare CAF
// ================================================================================================

using up_atom = caf::atom_constant<caf::atom("up")>;

/// What a bare child and its supervisor share: the registry, the prober to notify, and
/// (sustained) the crash loop. Set before the supervisor is spawned.
struct bare_env {
  explicit bare_env(std::size_t children) {
    for (std::size_t i = 0; i < children; ++i)
      names.push_back(child_name(i));
  }
  std::vector<std::string> names; // c0..c<n-1>
  bare_registry reg;
  loop_state* loop = nullptr;
  caf::actor notify;
};

caf::behavior bare_child(caf::event_based_actor* self, bare_env* env, std::uint64_t index,
                         bool restarted) {
  // An exception is an abnormal exit, silently (CAF's default handler would print it).
  self->set_exception_handler([](caf::scheduled_actor*, std::exception_ptr&) -> caf::error {
    return caf::make_error(caf::sec::runtime_error);
  });
  // Registered before anything can look for it, as an agent is bound before it runs.
  env->reg.put(env->names[index], caf::actor_cast<caf::actor>(self));
  if (env->notify) self->send(env->notify, up_atom::value, index);
  if (env->loop != nullptr) {
    if (restarted) env->loop->note_restart();
    if (env->loop->crash.load(std::memory_order_relaxed)) {
      if (env->loop->mode == k_throw)
        self->send(self, throw_atom::value);
      else
        self->send(self, fail_atom::value);
    }
  }
  return {
      [self](fail_atom) { self->quit(caf::make_error(caf::sec::runtime_error)); },
      [](throw_atom) { throw std::runtime_error("bench crash"); },
      [](std::int64_t v) { return v; },
  };
}

/// A minimal supervisor: spawns `n` children (they register as c0..c<n-1>), monitors them and
/// respawns a child on its down_msg (one_for_one); for one_for_all it stops the other children
/// one at a time in reverse start order (exit + wait for the down_msg), then spawns all again.
class bare_supervisor : public caf::event_based_actor {
public:
  bare_supervisor(caf::actor_config& cfg, bare_env* env, std::size_t n, bool one_for_all)
      : caf::event_based_actor(cfg), env_(env), one_for_all_(one_for_all), children_(n) {}

  caf::behavior make_behavior() override {
    set_down_handler([this](caf::down_msg& m) { on_down(m); });
    for (std::size_t i = 0; i < children_.size(); ++i)
      start(i, false);
    return {[this](stop_atom) {
      shutting_down_ = true;
      for (auto& c : children_)
        if (c) anon_send_exit(c, caf::exit_reason::kill);
      quit();
    }};
  }

private:
  void start(std::size_t i, bool restarted) {
    auto a = spawn(bare_child, env_, static_cast<std::uint64_t>(i), restarted);
    monitor(a);
    index_[a.id()] = i;
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
    for (std::size_t j = 0; j < children_.size(); ++j)
      start(j, true);
  }

  bare_env* env_;
  bool one_for_all_;
  std::vector<caf::actor> children_;
  std::unordered_map<caf::actor_id, std::size_t> index_;
  bool stopping_ = false;
  bool shutting_down_ = false;
  std::vector<std::size_t> order_;
  std::size_t next_ = 0;
};

/// The prober, bare: the same protocol through the bare registry and CAF requests.
class bare_prober : public caf::event_based_actor {
public:
  bare_prober(caf::actor_config& cfg, bare_env* env, probe_job* job)
      : caf::event_based_actor(cfg), env_(env), st_(job) {}

  caf::behavior make_behavior() override {
    return {
        [this](std::uint64_t v) {
          if (v == k_begin) return crash();
          st_.scan_pending = false;
          scan();
        },
        [this](up_atom, std::uint64_t i) {
          if (st_.active && i < st_.names.size()) try_one(i);
        },
    };
  }

private:
  void crash() {
    for (std::size_t i = 0; i < st_.names.size(); ++i) {
      st_.old[i] = env_->reg.get(st_.names[i]);
      if (!st_.old[i]) die("bare child missing");
      st_.ok[i] = false;
      st_.inflight[i] = false;
    }
    st_.confirmed = 0;
    ++st_.round;
    st_.active = true;
    t0_ = bench::clock::now();
    const auto& victim = st_.old[st_.names.size() / 2];
    if (st_.job->mode == k_throw)
      send(victim, throw_atom::value);
    else
      send(victim, fail_atom::value);
    if (!st_.job->notify) scan();
  }

  void scan() {
    if (!st_.active) return;
    bool retry = false;
    for (std::size_t i = 0; i < st_.names.size() && st_.active; ++i)
      if (!try_one(i)) retry = true;
    if (retry) yield();
  }

  bool try_one(std::size_t i) {
    if (st_.ok[i] || st_.inflight[i]) return true;
    auto a = env_->reg.get(st_.names[i]);
    if (!a || a == st_.old[i]) return false;
    st_.inflight[i] = true;
    request(a, caf::infinite, static_cast<std::int64_t>(i))
        .then(
            [this, i, round = st_.round](std::int64_t v) {
              if (round != st_.round) return;
              st_.inflight[i] = false;
              if (v != static_cast<std::int64_t>(i)) return yield();
              st_.ok[i] = true;
              if (++st_.confirmed == st_.names.size()) finish();
            },
            [this, i, round = st_.round](caf::error&) {
              if (round != st_.round) return;
              st_.inflight[i] = false;
              if (st_.job->notify) die("bare ask failed: a restarted child did not answer");
              yield();
            });
    return true;
  }

  void finish() {
    const auto t1 = bench::clock::now();
    st_.active = false;
    auto* job = st_.job;
    if (st_.rounds_done >= job->warmup)
      job->samples_us.push_back(bench::seconds_between(t0_, t1) * 1e6);
    if (++st_.rounds_done == job->warmup + job->n) {
      ++st_.round;
      job->done.set_value();
      return;
    }
    crash();
  }

  void yield() {
    if (st_.job->notify || st_.scan_pending) return;
    st_.scan_pending = true;
    send(this, k_probe);
  }

  bare_env* env_;
  probe_state<caf::actor> st_;
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
    while (!n.lookup(child_name(i)))
      std::this_thread::sleep_for(1ms);
}

void wait_bound(const bare_registry& reg, std::size_t children) {
  for (std::size_t i = 0; i < children; ++i)
    while (!reg.get(child_name(i)))
      std::this_thread::sleep_for(1ms);
}

/// One run of a prober scenario on a node: a supervisor `how` of `job.children` children, the
/// prober spawned first (so that every instance can notify it).
bench::run probe_agent(probe_job& job, af::sup::strategy how, log_tally* logs) {
  auto fut = job.done.get_future();
  log_file lf;
  {
    auto node = start_logged_node(lf);
    auto prober = node->spawn<prober_agent>("prober", &job);
    if (!prober) die("prober: " + prober.error().to_string());
    auto spec = fast_spec("bench.sup", how);
    for (std::size_t i = 0; i < job.children; ++i)
      spec.children.push_back(
          af::sup::agent_child<child_agent>(child_name(i), static_cast<loop_state*>(nullptr),
                                            std::string{job.notify ? "prober" : ""}));
    start_supervisor(*node, std::move(spec));
    wait_bound(*node, job.children);
    UInt64Value go;
    go.set_value(k_begin);
    node->tell(*prober, go);
    fut.wait();
  }
  if (logs != nullptr) logs->add(lf.events());
  return {bench::median(job.samples_us), std::move(job.samples_us), 1, job.n};
}

bench::run probe_bare(probe_job& job, bool one_for_all) {
  auto fut = job.done.get_future();
  {
    bench::bare_config cfg;
    caf::actor_system sys{cfg};
    bare_env env{job.children};
    auto prober = sys.spawn<bare_prober>(&env, &job);
    if (job.notify) env.notify = prober;
    auto sup = sys.spawn<bare_supervisor>(&env, job.children, one_for_all);
    wait_bound(env.reg, job.children);
    caf::anon_send(prober, k_begin);
    fut.wait();
    caf::anon_send_exit(prober, caf::exit_reason::user_shutdown);
    caf::anon_send(sup, stop_atom::value);
    sys.await_all_actors_done();
    env.reg.clear();
    env.notify = nullptr;
  }
  return {bench::median(job.samples_us), std::move(job.samples_us), 1, job.n};
}

probe_job latency_job(const options& o, std::int64_t mode, bool notify) {
  probe_job j;
  j.children = 1;
  j.mode = mode;
  j.notify = notify;
  j.warmup = o.warmup;
  j.n = o.restarts;
  j.samples_us.reserve(o.restarts);
  return j;
}

probe_job group_job(const options& o, bool notify) {
  probe_job j;
  j.children = o.children;
  j.mode = k_fail;
  j.notify = notify;
  j.warmup = o.group_warmup;
  j.n = o.group_restarts;
  return j;
}

/// Microsecond samples to milliseconds.
bench::run in_ms(bench::run r) {
  r.value /= 1e3;
  for (auto& s : r.samples)
    s /= 1e3;
  return r;
}

// --- scenario 2 -------------------------------------------------------------------------------

struct sustained_result {
  bench::run run;
  std::uint64_t total = 0;      // completed restarts (the atomic), whole run
  std::uint64_t supervisor = 0; // restarts the supervisor reports (agent only)
};

sustained_result sustained_agent(const options& o, std::int64_t mode, log_tally* logs) {
  loop_state st;
  st.mode = mode;
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
    for (const auto& c : w->children())
      out.supervisor += c.restarts();
  }
  if (logs != nullptr) logs->add(lf.events());
  return out;
}

sustained_result sustained_bare(const options& o, std::int64_t mode) {
  loop_state st;
  st.mode = mode;
  sustained_result out;
  {
    bench::bare_config cfg;
    caf::actor_system sys{cfg};
    bare_env env{o.children};
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

/// With --variant (no JSON): one line per run on stderr, for profiling sessions.
void trace(bool quiet, const std::string& what, const bench::run& r, std::uint64_t total = 0) {
  if (!quiet) return;
  std::fprintf(stderr, "%s: median/value %s over %zu ops", what.c_str(),
               bench::num(r.value).c_str(), r.ops);
  if (total != 0)
    std::fprintf(stderr, " (%llu in the whole run)", static_cast<unsigned long long>(total));
  std::fprintf(stderr, "; RSS %.1f MiB\n", static_cast<double>(bench::rss_bytes()) / (1 << 20));
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
  o.group_restarts = static_cast<std::size_t>(bench::int_option(argc, argv, "--group-restarts", 5));
  const auto scenario = bench::string_option(argc, argv, "--scenario", "");
  const auto only = bench::string_option(argc, argv, "--variant", "");
  const auto probe = bench::string_option(argc, argv, "--probe", "");
  const auto crash_mode = bench::string_option(argc, argv, "--crash", "");
  const bool agent_side = only.empty() || only == "agent";
  const bool bare_side = only.empty() || only == "bare";
  const bool quiet = !only.empty();
  auto wanted = [&](const char* s) { return scenario.empty() || scenario == s; };
  const auto kids = std::to_string(o.children);

  // Scenarios 1 and 3: probe variants, all runs interleaved so drift hits every variant alike.
  struct variant {
    bool group; // one_for_all of o.children, else one_for_one of 1
    std::int64_t mode;
    bool notify;
    std::vector<bench::run> agent, bare;
    log_tally logs;
  };
  std::vector<variant> vs;
  for (bool group : {false, true}) {
    if (!wanted(group ? "one_for_all" : "latency")) continue;
    for (bool notify : {false, true}) {
      if (!probe.empty() && probe != (notify ? "notify" : "poll")) continue;
      if (group || crash_mode != "throw") vs.push_back({group, k_fail, notify, {}, {}, {}});
      if (!group && crash_mode != "fail") vs.push_back({group, k_throw, notify, {}, {}, {}});
    }
  }
  for (std::size_t r = 0; r < o.runs && !vs.empty(); ++r)
    for (auto& v : vs) {
      const auto how = v.group ? af::sup::strategy::one_for_all : af::sup::strategy::one_for_one;
      if (agent_side) {
        auto job = v.group ? group_job(o, v.notify) : latency_job(o, v.mode, v.notify);
        auto run = probe_agent(job, how, &v.logs);
        v.agent.push_back(v.group ? in_ms(std::move(run)) : std::move(run));
        trace(quiet, "probe agent", v.agent.back());
      }
      if (bare_side) {
        auto job = v.group ? group_job(o, v.notify) : latency_job(o, v.mode, v.notify);
        auto run = probe_bare(job, v.group);
        v.bare.push_back(v.group ? in_ms(std::move(run)) : std::move(run));
        trace(quiet, "probe bare", v.bare.back());
      }
    }
  for (auto& v : vs) {
    if (quiet) break;
    const char* unit = v.group ? "ms" : "us";
    auto a = bench::summarize(v.agent, bench::kind::latency, unit);
    auto b = bench::summarize(v.bare, bench::kind::latency, unit);
    const bool fail = v.mode == k_fail;
    const std::string wait = v.notify ? "prober woken by each new instance's start, then asks"
                                      : "prober polls lookup + ask";
    if (!v.group) {
      bench::emit(
          std::string{"restart.latency."} + (fail ? "fail" : "throw") + (v.notify ? ".notify" : ""),
          std::string{"Restart latency, one_for_one: "} + (fail ? "ctx.fail" : "handler throws")
              + " -> restarted child answers an ask (" + wait + ")",
          a, &b,
          std::string{"bare CAF: "} + (fail ? "quit(error)" : "handler throws")
              + " -> respawn on down_msg -> request answered",
          bench::target{"median", "<", 50},
          std::to_string(o.restarts) + " restarts per run after " + std::to_string(o.warmup)
              + " warm-up; " + log_note(v.logs, {"child_restarting", "agent_crashed"}));
    } else {
      bench::emit(std::string{"restart.one_for_all"} + (v.notify ? ".notify" : ""),
                  "one_for_all of " + kids + " children: one crash (ctx.fail) -> all " + kids
                      + " restarted children answer an ask (" + wait + ")",
                  a, &b, "bare CAF: stop the others one by one (reverse order), respawn all",
                  std::nullopt,
                  std::to_string(o.group_restarts) + " group restarts per run after "
                      + std::to_string(o.group_warmup) + " warm-up; "
                      + log_note(v.logs, {"child_restarting"}));
    }
  }

  if (wanted("sustained")) {
    struct variant {
      std::int64_t mode;
      std::vector<bench::run> agent, bare;
      log_tally logs;
      std::size_t mismatch = 0;
    };
    std::vector<variant> vs;
    if (crash_mode != "throw") vs.push_back({k_fail, {}, {}, {}, 0});
    if (crash_mode != "fail") vs.push_back({k_throw, {}, {}, {}, 0});
    for (std::size_t r = 0; r < o.runs; ++r)
      for (auto& v : vs) {
        if (agent_side) {
          auto a = sustained_agent(o, v.mode, &v.logs);
          if (a.total != a.supervisor) {
            std::fprintf(stderr,
                         "bench: restart.sustained: supervisor reports %llu restarts, children "
                         "counted %llu\n",
                         static_cast<unsigned long long>(a.supervisor),
                         static_cast<unsigned long long>(a.total));
            ++v.mismatch;
          }
          trace(quiet, "sustained agent", a.run, a.total);
          v.agent.push_back(std::move(a.run));
        }
        if (bare_side) {
          auto b = sustained_bare(o, v.mode);
          trace(quiet, "sustained bare", b.run, b.total);
          v.bare.push_back(std::move(b.run));
        }
      }
    for (auto& v : vs) {
      if (quiet) break;
      const bool fail = v.mode == k_fail;
      auto a = bench::summarize(v.agent, bench::kind::rate, "restarts/s");
      auto b = bench::summarize(v.bare, bench::kind::rate, "restarts/s");
      std::optional<bench::target> t;
      if (fail) t = bench::target{"median", ">=", 100000};
      bench::emit(
          std::string{"restart.sustained"} + (fail ? "" : ".throw"),
          "Sustained restarts, one_for_one supervisor of " + kids + " children that "
              + (fail ? "call ctx.fail" : "throw from a handler") + " as soon as they start",
          a, &b,
          std::string{"bare CAF: respawn on down_msg, children that "}
              + (fail ? "quit(error)" : "throw"),
          t,
          bench::num(o.seconds) + " s window after " + bench::num(o.warmup_seconds)
              + " s warm-up; the supervisor's restart count "
              + (v.mismatch == 0 ? "matched" : "did NOT match") + " the children's in every run; "
              + log_note(v.logs, {"child_restarting", "agent_crashed"}));
    }
  }
  return 0;
}
