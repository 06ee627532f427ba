// The Raft metadata store on 3 real nodes: three `af node start` processes on loopback, each a
// Raft member with its own SQLite journal (the durable log: a command is acknowledged after a
// majority has it in its journal), and this process as a client node on the cluster transport.
// 64 clients, each with one MetaPut in flight (its own session), ask the leader: commits/s and
// the commit latency p50/p99. Baseline in the same run: the same 64 clients asking the leader's
// af.cluster.raft for its RaftStatus (the transport and the agent, without consensus or disk).
//
//   af_bench_raft [--runs 5] [--n 20000] [--warmup 2000] [--clients 64] [--af PATH]
#include "bench_common.hpp"

#include "af/agent.hpp"
#include "af/cluster/names.hpp"
#include "af/config.hpp"
#include "af/node.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/meta.pb.h"

#include <google/protobuf/empty.pb.h>
#include <google/protobuf/wrappers.pb.h>

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

using google::protobuf::BoolValue;
using google::protobuf::UInt64Value;
using namespace std::chrono_literals;

namespace {

const std::vector<std::string> k_members{"n1", "n2", "n3"};

struct server {
  std::string name;
  pid_t pid = -1;
  std::uint16_t cluster_port = 0;
};

server start_server(const std::string& af, const std::filesystem::path& dir,
                    const std::string& name, const std::string& secret, std::uint16_t seed) {
  server s;
  s.name = name;
  const auto port_file = (dir / (name + ".json")).string();
  const auto data = (dir / name).string();
  const auto log = (dir / (name + ".log")).string();
  std::vector<std::string> args{af,
                                "node",
                                "start",
                                "--name",
                                name,
                                "--data-dir",
                                data,
                                "--listen",
                                "127.0.0.1:0",
                                "--cluster-listen",
                                "127.0.0.1:0",
                                "--cluster-secret-file",
                                secret,
                                "--set",
                                "cluster.raft.members=n1,n2,n3",
                                "--set",
                                "cluster.peer_rate=0",
                                "--set",
                                "log.level=warn",
                                "--no-demo-service",
                                "--port-file",
                                port_file};
  if (seed != 0) {
    args.emplace_back("--join");
    args.push_back("127.0.0.1:" + std::to_string(seed));
  }
  s.pid = ::fork();
  if (s.pid < 0) bench::die("fork");
  if (s.pid == 0) {
    std::FILE* f = std::freopen(log.c_str(), "w", stdout);
    if (f != nullptr) ::dup2(::fileno(stdout), 2);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(af.c_str(), argv.data());
    ::_exit(127);
  }
  const auto deadline = bench::clock::now() + 30s;
  for (;;) {
    std::ifstream in{port_file};
    if (in) {
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded() && j.contains("cluster_port")) {
        s.cluster_port = j["cluster_port"].get<std::uint16_t>();
        break;
      }
    }
    int st = 0;
    if (::waitpid(s.pid, &st, WNOHANG) == s.pid)
      bench::die("node " + name + " exited before writing its port file (log: " + log + ")");
    if (bench::clock::now() > deadline) bench::die("node " + name + " did not start");
    std::this_thread::sleep_for(50ms);
  }
  return s;
}

void stop_server(server& s) {
  ::kill(s.pid, SIGTERM);
  int st = 0;
  ::waitpid(s.pid, &st, 0);
}

struct job {
  bool consensus = true; ///< MetaPut (true) or RaftStatusRequest (the baseline)
  std::size_t warmup = 0, n = 0, window = 64;
  std::string run_id;
  std::vector<double> latencies_us;
  double seconds = 0;
  std::string leader;
  std::promise<void> done;
};

/// Finds the leader (asking n1, n2, n3 in turn), then keeps `window` asks in flight to it.
class load_agent : public af::agent_base<load_agent> {
public:
  static void define(af::handlers<load_agent>& h) {
    h.kind("bench.raft_load").on(&load_agent::start).on(&load_agent::retry);
  }
  explicit load_agent(job* j) : job_(j) {}

  void start(af::context& ctx, const UInt64Value&) { find_leader(ctx); }
  void retry(af::context& ctx, const BoolValue&) { find_leader(ctx); }

private:
  void find_leader(af::context& ctx) {
    if (++attempts_ > 300) bench::die("no Raft leader after 300 attempts");
    auto ref =
        ctx.lookup(af::address{k_members[attempts_ % 3], std::string{af::cluster::k_raft_agent}});
    if (!ref) {
      ctx.schedule(100ms, BoolValue{});
      return;
    }
    ctx.ask<af::v1::RaftStatus>(
        *ref, af::v1::RaftStatusRequest{}, 2s, [this, &ctx](af::expected<af::v1::RaftStatus> r) {
          if (!r || r->leader().empty()) {
            ctx.schedule(100ms, BoolValue{});
            return;
          }
          auto l = ctx.lookup(af::address{r->leader(), std::string{af::cluster::k_raft_agent}});
          if (!l) bench::die(l.error().to_string());
          leader_ = *l;
          job_->leader = r->leader();
          seqs_.assign(job_->window, 0);
          for (std::size_t slot = 0; slot < job_->window; ++slot)
            next(ctx, slot);
        });
  }

  void next(af::context& ctx, std::size_t slot) {
    if (issued_ == job_->warmup + job_->n) return;
    const auto i = issued_++;
    const auto t0 = bench::clock::now();
    auto done = [this, &ctx, slot, i, t0](bool ok, const std::string& what) {
      const auto t1 = bench::clock::now();
      if (!ok) bench::die("ask " + std::to_string(i) + " failed: " + what);
      ++answered_;
      if (answered_ == job_->warmup) start_ = t1;
      if (i >= job_->warmup) job_->latencies_us.push_back(bench::seconds_between(t0, t1) * 1e6);
      if (answered_ == job_->warmup + job_->n) {
        job_->seconds = bench::seconds_between(start_, t1);
        job_->done.set_value();
        return;
      }
      next(ctx, slot);
    };
    if (!job_->consensus) {
      ctx.ask<af::v1::RaftStatus>(leader_, af::v1::RaftStatusRequest{}, 10s,
                                  [done](af::expected<af::v1::RaftStatus> r) {
                                    done(r.has_value(), r ? "" : r.error().to_string());
                                  });
      return;
    }
    af::v1::MetaPut put;
    put.set_key("bench/" + std::to_string(i % 1000));
    put.set_value(std::to_string(i));
    put.mutable_session()->set_client_id("bench-" + job_->run_id + "-" + std::to_string(slot));
    put.mutable_session()->set_seq(++seqs_[slot]);
    ctx.ask<af::v1::MetaResult>(leader_, std::move(put), 10s,
                                [done](af::expected<af::v1::MetaResult> r) {
                                  done(r && r->ok(), r ? "not ok" : r.error().to_string());
                                });
  }

  job* job_;
  af::agent_ref leader_;
  std::vector<std::uint64_t> seqs_;
  std::size_t attempts_ = 0, issued_ = 0, answered_ = 0;
  bench::clock::time_point start_ = bench::clock::now();
};

std::unique_ptr<af::node> start_client(const std::string& secret,
                                       const std::vector<server>& servers) {
  af::config_sources src;
  src.flags.push_back({"node.name", "bench", "bench"});
  src.flags.push_back({"cluster.listen", "127.0.0.1:0", "bench"});
  src.flags.push_back({"cluster.secret_file", secret, "bench"});
  src.flags.push_back({"cluster.peer_rate", "0", "bench"});
  src.flags.push_back({"log.level", "warn", "bench"});
  src.flags.push_back({"log.format", "text", "bench"});
  auto cfg = af::config::load(src);
  if (!cfg) bench::die(cfg.error().to_string());
  af::node::options opt;
  opt.cfg = std::move(*cfg);
  auto n = af::node::start(std::move(opt));
  if (!n) bench::die("client node: " + n.error().to_string());
  af::v1::PeerRoutes pr;
  for (const auto& s : servers) {
    auto* m = pr.add_members();
    m->set_node(s.name);
    m->set_endpoint("127.0.0.1:" + std::to_string(s.cluster_port));
    m->set_state(af::v1::MEMBER_ALIVE);
  }
  auto r = (*n)->ask<google::protobuf::Empty>(std::string{af::cluster::k_transport_agent}, pr, 5s);
  if (!r) bench::die("routes: " + r.error().to_string());
  return std::move(*n);
}

/// One run: a fresh 3-node cluster, the consensus job, then the baseline job on the same leader.
void one_run(const std::string& af, std::size_t r, std::size_t n, std::size_t warmup,
             std::size_t clients, std::vector<bench::run>& put_rate,
             std::vector<bench::run>& put_lat, std::vector<bench::run>& base_rate,
             std::vector<bench::run>& base_lat) {
  bench::temp_dir dir{"af-bench-raft"};
  const auto secret = (dir.path() / "secret").string();
  {
    std::ofstream out{secret};
    out << "bench raft secret, not secret at all\n";
  }
  std::vector<server> servers;
  servers.push_back(start_server(af, dir.path(), "n1", secret, 0));
  servers.push_back(start_server(af, dir.path(), "n2", secret, servers[0].cluster_port));
  servers.push_back(start_server(af, dir.path(), "n3", secret, servers[0].cluster_port));
  {
    auto node = start_client(secret, servers);
    for (int variant = 0; variant < 2; ++variant) {
      job j;
      j.consensus = variant == 0;
      j.warmup = warmup;
      j.n = n;
      j.window = clients;
      j.run_id = std::to_string(r);
      auto fut = j.done.get_future();
      auto a = node->spawn<load_agent>("load" + std::to_string(variant), &j);
      if (!a) bench::die(a.error().to_string());
      node->tell(*a, UInt64Value{});
      if (fut.wait_for(600s) != std::future_status::ready) bench::die("run timed out");
      const double rate = static_cast<double>(j.n) / j.seconds;
      const double p50 = bench::median(j.latencies_us);
      auto& rates = j.consensus ? put_rate : base_rate;
      auto& lats = j.consensus ? put_lat : base_lat;
      rates.push_back({rate, {}, 1, j.n});
      lats.push_back({p50, std::move(j.latencies_us), 1, j.n});
      std::fprintf(stderr, "run %zu %s: leader %s, %.0f/s, p50 %.0f us\n", r,
                   j.consensus ? "MetaPut" : "RaftStatus", j.leader.c_str(), rate, p50);
    }
  }
  for (auto& s : servers)
    stop_server(s);
}

} // namespace

int main(int argc, char** argv) {
  const auto runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  const auto n = static_cast<std::size_t>(bench::int_option(argc, argv, "--n", 20000));
  const auto warmup = static_cast<std::size_t>(bench::int_option(argc, argv, "--warmup", 2000));
  const auto clients = static_cast<std::size_t>(bench::int_option(argc, argv, "--clients", 64));
  std::string af = bench::string_option(argc, argv, "--af", "");
  if (af.empty())
    af = (std::filesystem::canonical("/proc/self/exe").parent_path().parent_path() / "apps" / "af")
             .string();
  if (::access(af.c_str(), X_OK) != 0) bench::die("no af binary at '" + af + "' (use --af PATH)");
  std::vector<bench::run> put_rate, put_lat, base_rate, base_lat;
  for (std::size_t r = 0; r < runs; ++r)
    one_run(af, r, n, warmup, clients, put_rate, put_lat, base_rate, base_lat);
  const auto pr = bench::summarize(put_rate, bench::kind::plain, "commits/s");
  const auto br = bench::summarize(base_rate, bench::kind::plain, "asks/s");
  const auto pl = bench::summarize(put_lat, bench::kind::latency, "us");
  const auto bl = bench::summarize(base_lat, bench::kind::latency, "us");
  const std::string base = "the same clients asking the leader for its RaftStatus (no consensus)";
  bench::emit("raft_commits_64", "Raft commits/s, 3 nodes, durable SQLite logs, 64 clients", pr,
              &br, base, bench::target{"median", ">=", 20000});
  bench::emit("raft_commit_latency_64",
              "Raft commit latency under 64 clients (p50 is the median of the runs' p50s)", pl, &bl,
              base, bench::target{"median", "<", 2000});
  return 0;
}
