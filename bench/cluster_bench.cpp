// Cluster transport between two processes on loopback: an agent asks an agent on another node by
// address (sequential round trips: p50/p99; 64 asks in flight: asks/s), and one-way tells to a
// remote agent (batches of 1,000 with at most 2 unacknowledged). Baseline in the same run: bare
// CAF remote request/response and one-way sends through the middleman (BASP) between the same
// two kinds of processes. The server is this binary again, exec'd in server mode per run.
//
//   af_bench_cluster [--runs 5] [--n 20000] [--warmup 2000] [--tells 400000]
//   af_bench_cluster --af-one-way-only 1 [--tells N]   (profiling: the AgentFlow one-way job only)
//   af_bench_cluster --serve af|bare SECRET_FILE stealing|sharing   (server mode: prints
//                                                   "PORT n", runs until stdin closes)
#include "bench_common.hpp"
#include "bench_systems.hpp"

#include "af/agent.hpp"
#include "af/v1/cluster.pb.h"

#include <caf/io/all.hpp>

#include <google/protobuf/empty.pb.h>
#include <google/protobuf/wrappers.pb.h>

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <string>
#include <vector>

using google::protobuf::Int64Value;
using google::protobuf::StringValue;
using google::protobuf::UInt64Value;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t k_window = 64;  // asks in flight for the throughput figure
constexpr std::size_t k_batch = 1000; // tells per acknowledged batch
constexpr std::size_t k_unacked = 2;  // batches in flight

using ack_atom = caf::atom_constant<caf::atom("ack")>;

// --- server side -----------------------------------------------------------------------------

class echo_agent : public af::agent_base<echo_agent> {
public:
  static void define(af::handlers<echo_agent>& h) { h.kind("bench.echo").on(&echo_agent::echo); }
  af::expected<Int64Value> echo(af::context&, const Int64Value& v) { return v; }
};

class sink_agent : public af::agent_base<sink_agent> {
public:
  static void define(af::handlers<sink_agent>& h) {
    h.kind("bench.sink").on(&sink_agent::take).on(&sink_agent::ack);
  }
  void take(af::context&, const Int64Value&) { ++count_; }
  af::expected<Int64Value> ack(af::context&, const StringValue&) {
    Int64Value v;
    v.set_value(count_);
    return v;
  }

private:
  std::int64_t count_ = 0;
};

std::unique_ptr<af::node> start_cluster_node(const std::string& name,
                                             const std::string& secret_file,
                                             const std::string& policy) {
  af::config_sources src;
  src.flags.push_back({"node.name", name, "bench"});
  src.flags.push_back({"cluster.listen", "127.0.0.1:0", "bench"});
  src.flags.push_back({"cluster.secret_file", secret_file, "bench"});
  src.flags.push_back({"cluster.peer_rate", "0", "bench"});
  src.flags.push_back({"scheduler.policy", policy, "bench"});
  src.flags.push_back({"log.level", "warn", "bench"});
  src.flags.push_back({"log.format", "text", "bench"});
  auto cfg = af::config::load(src);
  if (!cfg) bench::die(cfg.error().to_string());
  af::node::options opt;
  opt.cfg = std::move(*cfg);
  auto n = af::node::start(std::move(opt));
  if (!n) bench::die("node start failed: " + n.error().to_string());
  return std::move(*n);
}

void wait_for_stdin_eof() {
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
}

int serve(const std::string& mode, const std::string& secret_file, const std::string& policy) {
  if (mode == "af") {
    auto node = start_cluster_node("srv", secret_file, policy);
    if (!node->spawn<echo_agent>("echo") || !node->spawn<sink_agent>("sink"))
      bench::die("server agents");
    std::printf("PORT %u\n", node->cluster_port());
    std::fflush(stdout);
    wait_for_stdin_eof();
    return 0;
  }
  bench::bare_config cfg;
  cfg.set("scheduler.policy", caf::atom_from_string(policy));
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto echo = sys.spawn([]() -> caf::behavior {
    return {[](std::int64_t v) { return v; }, [](ack_atom) { return std::int64_t{0}; }};
  });
  auto count = std::make_shared<std::int64_t>(0);
  auto sink = sys.spawn([count]() -> caf::behavior {
    return {[count](std::int64_t) { ++*count; }, [count](ack_atom) { return *count; }};
  });
  auto p1 = sys.middleman().publish(echo, 0, "127.0.0.1");
  auto p2 = sys.middleman().publish(sink, 0, "127.0.0.1");
  if (!p1 || !p2) bench::die("bare publish failed");
  std::printf("PORT %u %u\n", *p1, *p2);
  std::fflush(stdout);
  wait_for_stdin_eof();
  caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  return 0;
}

struct server {
  pid_t pid = -1;
  int to_child = -1;
  std::uint16_t port = 0, port2 = 0;
};

server spawn_server(const std::string& mode, const std::string& secret_file,
                    const std::string& policy) {
  int in[2], out[2];
  if (::pipe(in) != 0 || ::pipe(out) != 0) bench::die("pipe");
  server s;
  s.pid = ::fork();
  if (s.pid < 0) bench::die("fork");
  if (s.pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::close(in[0]);
    ::close(in[1]);
    ::close(out[0]);
    ::close(out[1]);
    ::execl("/proc/self/exe", "af_bench_cluster", "--serve", mode.c_str(), secret_file.c_str(),
            policy.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  s.to_child = in[1];
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n')
    line.push_back(c);
  ::close(out[0]);
  unsigned a = 0, b = 0;
  if (std::sscanf(line.c_str(), "PORT %u %u", &a, &b) < 1) bench::die("server said: " + line);
  s.port = static_cast<std::uint16_t>(a);
  s.port2 = static_cast<std::uint16_t>(b);
  return s;
}

void stop_server(server& s) {
  ::close(s.to_child);
  int st = 0;
  ::waitpid(s.pid, &st, 0);
}

// --- client side: AgentFlow ------------------------------------------------------------------

struct job {
  std::string policy = "stealing";
  std::size_t warmup = 0, n = 0, window = 1;
  std::vector<double> samples; // latencies (us) or durations of k_batch tells (s)
  double seconds = 0;
  double envelopes_per_frame = 0; ///< the client's mean batch size (af variants)
  std::promise<void> done;
};

class asker_agent : public af::agent_base<asker_agent> {
public:
  static void define(af::handlers<asker_agent>& h) {
    h.kind("bench.asker").on(&asker_agent::start);
  }
  explicit asker_agent(job* j) : job_(j) {}

  void start(af::context& ctx, const UInt64Value&) {
    auto ref = ctx.lookup(af::address{"srv", "echo"});
    if (!ref) bench::die(ref.error().to_string());
    echo_ = *ref;
    for (std::size_t i = 0; i < job_->window; ++i)
      next(ctx);
  }

private:
  void next(af::context& ctx) {
    if (issued_ == job_->warmup + job_->n) return;
    const auto i = issued_++;
    Int64Value v;
    v.set_value(static_cast<std::int64_t>(i));
    const auto t0 = bench::clock::now();
    ctx.ask<Int64Value>(echo_, std::move(v), 5s, [this, &ctx, i, t0](af::expected<Int64Value> r) {
      const auto t1 = bench::clock::now();
      if (!r || r->value() != static_cast<std::int64_t>(i))
        bench::die("remote ask failed: "
                   + (r ? std::string{"wrong value"} : r.error().to_string()));
      ++answered_;
      if (answered_ == job_->warmup) start_ = t1;
      if (i >= job_->warmup && job_->window == 1)
        job_->samples.push_back(bench::seconds_between(t0, t1) * 1e6);
      if (answered_ == job_->warmup + job_->n) {
        job_->seconds = bench::seconds_between(start_, t1);
        job_->done.set_value();
        return;
      }
      next(ctx);
    });
  }

  job* job_;
  af::agent_ref echo_;
  std::size_t issued_ = 0, answered_ = 0;
  bench::clock::time_point start_ = bench::clock::now();
};

class sender_agent : public af::agent_base<sender_agent> {
public:
  static void define(af::handlers<sender_agent>& h) {
    h.kind("bench.sender").on(&sender_agent::start);
  }
  explicit sender_agent(job* j) : job_(j) {}

  void start(af::context& ctx, const UInt64Value&) {
    auto ref = ctx.lookup(af::address{"srv", "sink"});
    if (!ref) bench::die(ref.error().to_string());
    sink_ = *ref;
    batches_ = (job_->warmup + job_->n) / k_batch;
    warm_batches_ = job_->warmup / k_batch;
    last_ = bench::clock::now();
    for (std::size_t i = 0; i < k_unacked; ++i)
      batch(ctx);
  }

private:
  void batch(af::context& ctx) {
    if (sent_ == batches_) return;
    ++sent_;
    Int64Value v;
    v.set_value(1);
    for (std::size_t i = 0; i < k_batch; ++i)
      ctx.tell(sink_, v);
    ctx.ask<Int64Value>(sink_, StringValue{}, 30s, [this, &ctx](af::expected<Int64Value> r) {
      const auto t = bench::clock::now();
      if (!r) bench::die("ack failed: " + r.error().to_string());
      ++acked_;
      if (acked_ == warm_batches_) start_ = t;
      if (acked_ > warm_batches_) job_->samples.push_back(bench::seconds_between(last_, t));
      last_ = t;
      if (acked_ == batches_) {
        job_->seconds = bench::seconds_between(start_, t);
        if (r->value() != static_cast<std::int64_t>(batches_ * k_batch))
          bench::die("sink counted " + std::to_string(r->value()));
        job_->done.set_value();
        return;
      }
      batch(ctx);
    });
  }

  job* job_;
  af::agent_ref sink_;
  std::size_t batches_ = 0, warm_batches_ = 0, sent_ = 0, acked_ = 0;
  bench::clock::time_point start_ = bench::clock::now(), last_;
};

void add_route(af::node& n, std::uint16_t port) {
  af::v1::PeerRoutes pr;
  auto* m = pr.add_members();
  m->set_node("srv");
  m->set_endpoint("127.0.0.1:" + std::to_string(port));
  m->set_state(af::v1::MEMBER_ALIVE);
  auto r = n.ask<google::protobuf::Empty>(std::string{af::k_cluster_transport}, pr, 5s);
  if (!r) bench::die("routes: " + r.error().to_string());
}

/// The sum of the series of a family whose exposition line starts with `prefix`.
double metric_sum(af::node& n, const std::string& prefix) {
  const auto text = n.metrics().serialize_text();
  double total = 0;
  for (std::size_t at = 0; (at = text.find('\n' + prefix, at)) != std::string::npos;) {
    const auto end = text.find('\n', at + 1);
    const auto line = text.substr(at + 1, end - at - 1);
    total += std::stod(line.substr(line.rfind(' ') + 1));
    at = end;
  }
  return total;
}

template <class Agent>
void run_af_job(const std::string& secret, job& j, const char* agent_name) {
  auto srv = spawn_server("af", secret, j.policy);
  {
    auto node = start_cluster_node("cli", secret, j.policy);
    add_route(*node, srv.port);
    auto fut = j.done.get_future();
    auto a = node->spawn<Agent>(agent_name, &j);
    if (!a) bench::die(a.error().to_string());
    node->tell(*a, UInt64Value{});
    fut.wait();
    j.envelopes_per_frame = metric_sum(*node, "af_cluster_envelopes_total{direction=\"out\"")
                            / metric_sum(*node, "af_cluster_frames_total{direction=\"out\"");
  }
  stop_server(srv);
}

// --- client side: bare CAF -------------------------------------------------------------------

class bare_asker : public caf::event_based_actor {
public:
  bare_asker(caf::actor_config& cfg, caf::actor echo, job* j)
      : caf::event_based_actor(cfg), echo_(std::move(echo)), job_(j) {}
  caf::behavior make_behavior() override {
    for (std::size_t i = 0; i < job_->window; ++i)
      next();
    return {[](ack_atom) {}};
  }

private:
  void next() {
    if (issued_ == job_->warmup + job_->n) return;
    const auto i = issued_++;
    const auto t0 = bench::clock::now();
    request(echo_, caf::duration{std::chrono::seconds(5)}, static_cast<std::int64_t>(i))
        .then([this, i, t0](std::int64_t v) {
          const auto t1 = bench::clock::now();
          if (v != static_cast<std::int64_t>(i)) bench::die("bare: wrong value");
          ++answered_;
          if (answered_ == job_->warmup) start_ = t1;
          if (i >= job_->warmup && job_->window == 1)
            job_->samples.push_back(bench::seconds_between(t0, t1) * 1e6);
          if (answered_ == job_->warmup + job_->n) {
            job_->seconds = bench::seconds_between(start_, t1);
            job_->done.set_value();
            return;
          }
          next();
        });
  }
  caf::actor echo_;
  job* job_;
  std::size_t issued_ = 0, answered_ = 0;
  bench::clock::time_point start_ = bench::clock::now();
};

class bare_sender : public caf::event_based_actor {
public:
  bare_sender(caf::actor_config& cfg, caf::actor sink, job* j)
      : caf::event_based_actor(cfg), sink_(std::move(sink)), job_(j) {}
  caf::behavior make_behavior() override {
    batches_ = (job_->warmup + job_->n) / k_batch;
    warm_batches_ = job_->warmup / k_batch;
    last_ = bench::clock::now();
    for (std::size_t i = 0; i < k_unacked; ++i)
      batch();
    return {[](ack_atom) {}};
  }

private:
  void batch() {
    if (sent_ == batches_) return;
    ++sent_;
    for (std::size_t i = 0; i < k_batch; ++i)
      send(sink_, std::int64_t{1});
    request(sink_, caf::duration{std::chrono::seconds(30)}, ack_atom::value)
        .then([this](std::int64_t count) {
          const auto t = bench::clock::now();
          ++acked_;
          if (acked_ == warm_batches_) start_ = t;
          if (acked_ > warm_batches_) job_->samples.push_back(bench::seconds_between(last_, t));
          last_ = t;
          if (acked_ == batches_) {
            job_->seconds = bench::seconds_between(start_, t);
            if (count != static_cast<std::int64_t>(batches_ * k_batch))
              bench::die("bare sink counted " + std::to_string(count));
            job_->done.set_value();
            return;
          }
          batch();
        });
  }
  caf::actor sink_;
  job* job_;
  std::size_t batches_ = 0, warm_batches_ = 0, sent_ = 0, acked_ = 0;
  bench::clock::time_point start_ = bench::clock::now(), last_;
};

template <class Actor>
void run_bare_job(const std::string& secret, job& j, bool to_sink) {
  auto srv = spawn_server("bare", secret, j.policy);
  {
    bench::bare_config cfg;
    cfg.set("scheduler.policy", caf::atom_from_string(j.policy));
    cfg.load<caf::io::middleman>();
    caf::actor_system sys{cfg};
    auto target = sys.middleman().remote_actor("127.0.0.1", to_sink ? srv.port2 : srv.port);
    if (!target) bench::die("bare connect: " + sys.render(target.error()));
    auto fut = j.done.get_future();
    auto a = sys.spawn<Actor>(*target, &j);
    fut.wait();
    caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
  stop_server(srv);
}

bench::run latency_run(job& j) { return {bench::median(j.samples), std::move(j.samples), 1, j.n}; }
bench::run rate_run(job& j, double ops_per_sample) {
  return {static_cast<double>(j.n) / j.seconds, std::move(j.samples), ops_per_sample, j.n};
}

} // namespace

int main(int argc, char** argv) {
  if (argc >= 5 && std::string{argv[1]} == "--serve") return serve(argv[2], argv[3], argv[4]);
  const auto runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  const auto n = static_cast<std::size_t>(bench::int_option(argc, argv, "--n", 20000));
  const auto warmup = static_cast<std::size_t>(bench::int_option(argc, argv, "--warmup", 2000));
  const auto tells = static_cast<std::size_t>(bench::int_option(argc, argv, "--tells", 400000));

  bench::temp_dir dir{"af-bench-cluster"};
  const auto secret = (std::filesystem::path{"/tmp"} / "af-bench-cluster-secret").string();
  {
    std::ofstream out{secret};
    out << "bench cluster secret, not secret at all\n";
  }

  // Profiling aid: only the AgentFlow one-way job, its rate on stdout (no JSON row).
  if (bench::int_option(argc, argv, "--af-one-way-only", 0) != 0) {
    job j;
    j.warmup = 20 * k_batch;
    j.n = tells;
    run_af_job<sender_agent>(secret, j, "sender");
    std::printf("af one-way: %.0f envelopes/s, %.1f envelopes per frame\n",
                static_cast<double>(j.n) / j.seconds, j.envelopes_per_frame);
    std::filesystem::remove(secret);
    return 0;
  }
  std::vector<bench::run> af_lat, bare_lat, af_tp, bare_tp, af_ow, bare_ow, af_lat_sh, bare_lat_sh;
  std::vector<double> tp_batch, ow_batch;  // envelopes per frame sent by the client
  for (std::size_t r = 0; r < runs; ++r) { // interleaved, so drift hits all variants alike
    {
      job j;
      j.warmup = warmup;
      j.n = n;
      run_af_job<asker_agent>(secret, j, "asker");
      af_lat.push_back(latency_run(j));
    }
    {
      job j;
      j.warmup = warmup;
      j.n = n;
      run_bare_job<bare_asker>(secret, j, false);
      bare_lat.push_back(latency_run(j));
    }
    {
      job j;
      j.policy = "sharing";
      j.warmup = warmup;
      j.n = n;
      run_af_job<asker_agent>(secret, j, "asker");
      af_lat_sh.push_back(latency_run(j));
    }
    {
      job j;
      j.policy = "sharing";
      j.warmup = warmup;
      j.n = n;
      run_bare_job<bare_asker>(secret, j, false);
      bare_lat_sh.push_back(latency_run(j));
    }
    {
      job j;
      j.warmup = warmup;
      j.n = n * 2;
      j.window = k_window;
      run_af_job<asker_agent>(secret, j, "asker");
      tp_batch.push_back(j.envelopes_per_frame);
      af_tp.push_back(rate_run(j, 1));
    }
    {
      job j;
      j.warmup = warmup;
      j.n = n * 2;
      j.window = k_window;
      run_bare_job<bare_asker>(secret, j, false);
      bare_tp.push_back(rate_run(j, 1));
    }
    {
      job j;
      j.warmup = 20 * k_batch;
      j.n = tells;
      run_af_job<sender_agent>(secret, j, "sender");
      ow_batch.push_back(j.envelopes_per_frame);
      af_ow.push_back(rate_run(j, k_batch));
    }
    {
      job j;
      j.warmup = 20 * k_batch;
      j.n = tells;
      run_bare_job<bare_sender>(secret, j, true);
      bare_ow.push_back(rate_run(j, k_batch));
    }
  }
  std::filesystem::remove(secret);

  // Throughput rows have no per-ask samples; their p50/p99 are over runs.
  for (auto* v : {&af_tp, &bare_tp})
    for (auto& r : *v)
      r.samples.clear();
  auto al = bench::summarize(af_lat, bench::kind::latency, "us");
  auto bl = bench::summarize(bare_lat, bench::kind::latency, "us");
  auto als = bench::summarize(af_lat_sh, bench::kind::latency, "us");
  auto bls = bench::summarize(bare_lat_sh, bench::kind::latency, "us");
  auto at = bench::summarize(af_tp, bench::kind::rate, "asks/s");
  auto bt = bench::summarize(bare_tp, bench::kind::rate, "asks/s");
  auto ao = bench::summarize(af_ow, bench::kind::rate, "envelopes/s");
  auto bo = bench::summarize(bare_ow, bench::kind::rate, "messages/s");
  bench::emit("cluster.remote_ask",
              "Remote ask/reply between two processes on loopback, agent -> agent by address", al,
              &bl, "bare CAF remote request/response (int64, BASP)",
              bench::target{"median", "<", 100});
  bench::emit("cluster.remote_ask.sharing",
              "Remote ask/reply as above, both processes on the work-sharing scheduler", als, &bls,
              "bare CAF remote request/response, work sharing", bench::target{"median", "<", 100},
              "informational: the node default is work stealing (docs/architecture.md)");
  bench::emit("cluster.remote_ask_throughput",
              "Remote asks per second with 64 in flight, agent -> agent", at, &bt,
              "bare CAF remote requests, 64 in flight", std::nullopt,
              "client frames carried " + bench::num(bench::median(tp_batch))
                  + " envelopes each (median over runs)");
  bench::emit("cluster.one_way",
              "One-way envelopes per second to a remote agent (batched frames; 1,000 per ack, "
              "2 acks in flight)",
              ao, &bo, "bare CAF one-way remote sends (int64, one BASP message each)",
              bench::target{"median", ">=", 350000},
              "client frames carried " + bench::num(bench::median(ow_batch))
                  + " envelopes each (median over runs)");
  return 0;
}
