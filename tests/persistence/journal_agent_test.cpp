// The journal agent on a real node: appends, conflicts, reads, listing and snapshots through
// af.v1 requests; group commit under concurrent appenders; a store that cannot be opened yet;
// a crash of the journal agent, restarted by af.sup.system with the data intact.
#include "af/node.hpp"
#include "af/store/journal.hpp"
#include "af/sup/supervisor.hpp"
#include "af/v1/store.pb.h"
#include "caf_glue.hpp"
#include "flaky_backend.hpp"
#include "support/temp_dir.hpp"

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <sstream>
#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

node::options with_journal(store::journal_options jo) {
  node::options o;
  log_options lo;
  lo.level = log_level::warn;
  lo.format = "json";
  o.log = make_memory_log_backend(lo, std::make_shared<std::vector<std::string>>());
  o.system_services.push_back(store::journal_child(std::move(jo)));
  return o;
}

store::journal_options sqlite_at(const std::string& path) {
  store::journal_options jo;
  jo.open = [path]() { return store::open_url("sqlite:" + path); };
  return jo;
}

v1::AppendRequest append(std::string stream, std::uint64_t expected, int n) {
  v1::AppendRequest r;
  r.set_stream(std::move(stream));
  r.set_expected_version(expected);
  for (int i = 0; i < n; ++i) {
    auto* e = r.add_events();
    e->set_type("test.Event");
    e->set_payload("payload-" + std::to_string(i));
  }
  return r;
}

double metric_sum(node& n, const std::string& prefix) {
  std::istringstream in(n.metrics().serialize_text());
  double sum = 0;
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(prefix)) sum += std::stod(line.substr(line.rfind(' ') + 1));
  return sum;
}

} // namespace

TEST_CASE("journal agent: append, conflict, read, list and snapshots", "[journal]") {
  test::temp_dir dir;
  auto nd = node::start(with_journal(sqlite_at(dir.path() / "agentflow.db")));
  REQUIRE(nd);
  auto& n = **nd;
  auto a1 = n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/1", 0, 3), 5s);
  REQUIRE(a1);
  CHECK(a1->first_version() == 1);
  CHECK(a1->last_version() == 3);
  CHECK(a1->committed_at_ns() > 0);

  auto stale = n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/1", 1, 1), 5s);
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code() == errc::conflict);
  CHECK(stale.error().message().find("exec/1") != std::string::npos);
  CHECK(metric_sum(n, "af_journal_conflicts_total") == 1);

  auto a2 = n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/1", 3, 2), 5s);
  REQUIRE(a2);
  CHECK(a2->first_version() == 4);

  v1::ReadRequest rr;
  rr.set_stream("exec/1");
  rr.set_from_version(2);
  auto read = n.ask<v1::ReadResult>(store::k_journal_agent, rr, 5s);
  REQUIRE(read);
  REQUIRE(read->events_size() == 4);
  CHECK(read->events(0).version() == 2);
  CHECK(read->events(0).payload() == "payload-1");
  CHECK(read->events(0).tenant() == "default");
  CHECK(read->stream_version() == 5);

  REQUIRE(n.ask<v1::AppendResult>(store::k_journal_agent, append("saga/9", 0, 1), 5s));
  v1::ListStreamsRequest lr;
  lr.set_prefix("exec/");
  auto listed = n.ask<v1::ListStreamsResult>(store::k_journal_agent, lr, 5s);
  REQUIRE(listed);
  REQUIRE(listed->streams_size() == 1);
  CHECK(listed->streams(0).stream() == "exec/1");
  CHECK(listed->streams(0).version() == 5);

  v1::SaveSnapshotRequest ss;
  ss.set_stream("exec/1");
  ss.set_version(5);
  ss.set_type("test.State");
  ss.set_payload("state@5");
  REQUIRE(n.ask<v1::SnapshotResult>(store::k_journal_agent, ss, 5s));
  v1::LoadSnapshotRequest ls;
  ls.set_stream("exec/1");
  auto snap = n.ask<v1::SnapshotResult>(store::k_journal_agent, ls, 5s);
  REQUIRE(snap);
  CHECK(snap->found());
  CHECK(snap->version() == 5);
  CHECK(snap->payload() == "state@5");

  v1::AppendRequest empty;
  empty.set_stream("exec/2");
  auto bad = n.ask<v1::AppendResult>(store::k_journal_agent, empty, 5s);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == errc::validation);
}

TEST_CASE("journal agent: concurrent appends are group-committed", "[journal]") {
  test::temp_dir dir;
  auto nd = node::start(with_journal(sqlite_at(dir.path() / "agentflow.db")));
  REQUIRE(nd);
  auto& n = **nd;
  constexpr int k_threads = 8, k_each = 50;
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < k_threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < k_each; ++i) {
        auto r = n.ask<v1::AppendResult>(store::k_journal_agent,
                                         append("agent/" + std::to_string(t), i, 1), 10s);
        if (r && r->last_version() == static_cast<std::uint64_t>(i + 1)) ++ok;
      }
    });
  for (auto& t : ts)
    t.join();
  CHECK(ok == k_threads * k_each);
  const auto batches = metric_sum(n, "af_journal_batch_size_count");
  const auto appends = metric_sum(n, "af_journal_batch_size_sum");
  CHECK(appends == k_threads * k_each);
  CHECK(batches < appends); // some transactions carried several appends
}

namespace {

class echo_agent : public agent_base<echo_agent> {
public:
  static void define(handlers<echo_agent>& h) { h.kind("test.echo").on(&echo_agent::echo); }
  expected<v1::ReadResult> echo(context&, const v1::ReadRequest& r) {
    v1::ReadResult out;
    out.set_stream_version(r.from_version());
    return out;
  }
};

/// A node with one scheduler thread and the journal over a flaky_backend whose appends wait
/// while `hold` is set.
std::unique_ptr<node> one_worker_node(std::shared_ptr<std::atomic<bool>> hold,
                                      std::shared_ptr<std::atomic<int>> calls) {
  store::journal_options jo;
  jo.open = [hold, calls]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<test::flaky_backend>(
        test::flaky_backend::faults{.hold_appends = hold}, calls)};
  };
  jo.blocking = true; // as for SQLite and PostgreSQL: the backend's calls get a thread
  auto o = with_journal(std::move(jo));
  auto cfg = config::load({{}, {}, {{"scheduler.threads", "1", ""}}});
  REQUIRE(cfg);
  o.cfg = *cfg;
  auto nd = node::start(std::move(o));
  REQUIRE(nd);
  return std::move(*nd);
}

bool wait_for(const std::function<bool()>& f) {
  for (int i = 0; i < 2000; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

} // namespace

TEST_CASE("journal agent: a slow commit blocks no scheduler thread, and appends made during it "
          "share the next commit",
          "[journal]") {
  auto hold = std::make_shared<std::atomic<bool>>(true);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto n = one_worker_node(hold, calls);
  auto echo = n->spawn<echo_agent>("echo");
  REQUIRE(echo);

  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  auto append_from_thread = [&](std::string stream) {
    ts.emplace_back([&, stream] {
      if (n->ask<v1::AppendResult>(store::k_journal_agent, append(stream, 0, 1), 10s)) ++ok;
    });
  };
  append_from_thread("exec/first");
  REQUIRE(wait_for([&] { return calls->load() == 1; })); // its commit waits in the backend

  // The node's only scheduler thread is free: another agent answers meanwhile.
  v1::ReadRequest ping;
  ping.set_from_version(42);
  auto pong = n->ask<v1::ReadResult>(*echo, ping, 5s);
  REQUIRE(pong);
  CHECK(pong->stream_version() == 42);

  for (int i = 0; i < 5; ++i)
    append_from_thread("exec/next-" + std::to_string(i));
  std::this_thread::sleep_for(100ms); // they reach the journal while the first commit waits
  CHECK(calls->load() == 1);
  *hold = false;
  for (auto& t : ts)
    t.join();
  CHECK(ok == 6);
  CHECK(calls->load() == 2); // the five appends made during the first commit: one commit
  CHECK(metric_sum(*n, "af_journal_batch_size_count") == 2);
  CHECK(metric_sum(*n, "af_journal_batch_size_sum") == 6);

  // Reads go through the same thread, after the commits before them.
  v1::ReadRequest rr;
  rr.set_stream("exec/next-3");
  auto read = n->ask<v1::ReadResult>(store::k_journal_agent, rr, 5s);
  REQUIRE(read);
  CHECK(read->events_size() == 1);
}

TEST_CASE("journal agent: stopping during a slow commit still answers its appenders", "[journal]") {
  auto hold = std::make_shared<std::atomic<bool>>(true);
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto n = one_worker_node(hold, calls);
  expected<v1::AppendResult> result = error{errc::internal, "no reply yet"};
  std::thread asker{[&] {
    result = n->ask<v1::AppendResult>(store::k_journal_agent, append("exec/s", 0, 2), 10s);
  }};
  REQUIRE(wait_for([&] { return calls->load() == 1; }));
  std::thread release{[&] {
    std::this_thread::sleep_for(200ms);
    *hold = false;
  }};
  n->shutdown(); // waits for the commit the backend thread has taken
  asker.join();
  release.join();
  INFO((result ? std::string{} : result.error().to_string()));
  REQUIRE(result);
  CHECK(result->last_version() == 2);
}

TEST_CASE("journal agent: a commit waits for the streams just answered only while few appends "
          "wait",
          "[journal]") {
  // Commits take 200 ms; a hold lasts until every awaited stream is back (or the last commit's
  // duration has passed).
  auto hold = std::make_shared<std::atomic<bool>>(true);
  auto calls = std::make_shared<std::atomic<int>>(0);
  std::mutex m;
  std::vector<std::size_t> batches;
  store::journal_options jo;
  jo.open = [&]() -> expected<std::unique_ptr<store::backend>> {
    test::flaky_backend::faults f{.hold_appends = hold,
                                  .commit_delay = 200ms,
                                  .on_batch = [&](std::size_t k) {
                                    std::lock_guard g{m};
                                    batches.push_back(k);
                                  }};
    return std::unique_ptr<store::backend>{std::make_unique<test::flaky_backend>(f, calls)};
  };
  jo.blocking = true;
  jo.hold_fraction = 1.0;
  jo.hold_max = 5s;
  auto nd = node::start(with_journal(std::move(jo)));
  REQUIRE(nd);
  auto& n = **nd;
  std::atomic<int> ok{0};
  auto put = [&](const std::string& stream, std::uint64_t expected) {
    if (n.ask<v1::AppendResult>(store::k_journal_agent, append(stream, expected, 1), 10s)) ++ok;
  };

  // s0's commit is held while s1..s4 append: four appends wait, for one awaited stream (s0).
  std::vector<std::thread> ts;
  ts.emplace_back([&] {
    put("exec/s0", 0);
    wait_for([&] { return calls->load() == 2; }); // comes back while s1..s4 commit
    put("exec/s0", 1);
  });
  REQUIRE(wait_for([&] { return calls->load() == 1; }));
  for (int i = 1; i <= 4; ++i)
    ts.emplace_back([&, i] {
      const auto stream = "exec/s" + std::to_string(i);
      put(stream, 0);
      // Back soon after its reply, once the journal has decided on s0's second append alone.
      std::this_thread::sleep_for(20ms);
      put(stream, 1);
    });
  std::this_thread::sleep_for(100ms);
  *hold = false;
  for (auto& t : ts)
    t.join();
  CHECK(ok == 10);
  // {s0}; then s1..s4 at once instead of waiting for s0 (four waiting are a batch worth a
  // sync); then s0's second append, which arrived during that commit: one waiting for the
  // four streams just answered, so it is held until they are back, and all go in one commit.
  // (Holding whenever a stream answered is still out gave {1, 5, 4}: s1..s4 waited for s0.)
  std::lock_guard g{m};
  CHECK(batches == std::vector<std::size_t>{1, 4, 5});
}

TEST_CASE("journal agent: a store that cannot be opened yet", "[journal]") {
  test::temp_dir dir;
  auto available = std::make_shared<std::atomic<bool>>(false);
  store::journal_options jo;
  auto path = (dir.path() / "agentflow.db").string();
  jo.open = [available, path]() -> expected<std::unique_ptr<store::backend>> {
    if (!*available) return error{errc::transient, "store 'test': connection refused"};
    return store::open_url("sqlite:" + path);
  };
  auto nd = node::start(with_journal(std::move(jo)));
  REQUIRE(nd);
  auto& n = **nd;
  auto early = n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/1", 0, 1), 5s);
  REQUIRE_FALSE(early);
  CHECK(early.error().code() == errc::transient);
  CHECK(early.error().message().find("connection refused") != std::string::npos);
  *available = true;
  bool worked = false;
  for (int i = 0; i < 300 && !worked; ++i) {
    worked =
        n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/1", 0, 1), 5s).has_value();
    if (!worked) std::this_thread::sleep_for(20ms);
  }
  CHECK(worked);
  CHECK_FALSE(n.failure());
}

TEST_CASE("journal agent: killed, restarted by af.sup.system, data intact", "[journal]") {
  test::temp_dir dir;
  auto nd = node::start(with_journal(sqlite_at(dir.path() / "agentflow.db")));
  REQUIRE(nd);
  auto& n = **nd;
  REQUIRE(n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/7", 0, 2), 5s));
  auto old = *n.lookup(store::k_journal_agent);
  caf::anon_send_exit(to_actor(old), caf::exit_reason::kill);
  expected<v1::ReadResult> read = error{errc::internal, "not yet"};
  for (int i = 0; i < 300; ++i) {
    auto now = n.lookup(store::k_journal_agent);
    if (now && !(*now == old)) {
      v1::ReadRequest rr;
      rr.set_stream("exec/7");
      read = n.ask<v1::ReadResult>(*now, rr, 5s);
      if (read) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(read);
  CHECK(read->events_size() == 2);
  auto sys = sup::supervisor_ref::find(n, k_system_supervisor);
  REQUIRE(sys);
  auto w = sys->which_children();
  REQUIRE(w);
  REQUIRE(w->children_size() == 2);
  CHECK(w->children(0).id() == "af.journal");
  CHECK(w->children(0).restarts() == 1);
  CHECK(w->children(1).id() == "af.control");
  CHECK(w->children(1).restarts() == 1); // rest_for_one: the control agent restarted after it
}

TEST_CASE("journal agent: transient commit failures are retried with backoff", "[journal]") {
  auto calls = std::make_shared<std::atomic<int>>(0);
  store::journal_options jo;
  jo.open = [calls]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<test::flaky_backend>(
        test::flaky_backend::faults{.append_failures = 3}, calls)};
  };
  jo.retry.base = 1ms;
  jo.retry.cap = 5ms;
  auto nd = node::start(with_journal(jo));
  REQUIRE(nd);
  auto& n = **nd;

  // With an expected version a retry is safe: the append commits at the fourth attempt.
  auto ok = n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/r", 0, 2), 5s);
  INFO((ok ? std::string{} : ok.error().to_string()));
  REQUIRE(ok);
  CHECK(ok->last_version() == 2);
  CHECK(calls->load() == 4);
  CHECK(metric_sum(n, "af_retry_attempts_total{name=\"journal\",outcome=\"retry\"}") == 3);
  CHECK(metric_sum(n, "af_store_errors_total") == 3);

  // Without one, a retry could append twice: the caller gets the error.
  calls->store(0);
  auto any = append("exec/any", 0, 1);
  any.set_any_version(true);
  auto refused = n.ask<v1::AppendResult>(store::k_journal_agent, any, 5s);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::transient);
  CHECK(refused.error().message().find("flaky") != std::string::npos);
  CHECK(calls->load() == 1);
}

TEST_CASE("journal agent: gives up after the retry policy's attempts", "[journal]") {
  auto calls = std::make_shared<std::atomic<int>>(0);
  store::journal_options jo;
  jo.open = [calls]() -> expected<std::unique_ptr<store::backend>> {
    return std::unique_ptr<store::backend>{std::make_unique<test::flaky_backend>(
        test::flaky_backend::faults{.append_failures = 100}, calls)};
  };
  jo.retry.max_attempts = 3;
  jo.retry.base = 1ms;
  jo.retry.cap = 2ms;
  auto nd = node::start(with_journal(jo));
  REQUIRE(nd);
  auto r = (*nd)->ask<v1::AppendResult>(store::k_journal_agent, append("exec/x", 0, 1), 5s);
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == errc::transient);
  CHECK(r.error().message().find("3 attempts") != std::string::npos);
  CHECK(calls->load() == 3);
}

TEST_CASE("journal agent: finished streams, and retention compacting on its interval",
          "[journal]") {
  test::temp_dir dir;
  auto jo = sqlite_at(dir.path() / "agentflow.db");
  // Long enough that a loaded machine lists the finished stream before retention deletes it.
  jo.retention = 600ms;
  jo.compact_interval = 20ms;
  auto nd = node::start(with_journal(jo));
  REQUIRE(nd);
  auto& n = **nd;

  auto done = append("exec/done", 0, 3);
  done.set_finish(true);
  REQUIRE(n.ask<v1::AppendResult>(store::k_journal_agent, done, 5s));
  auto after = n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/done", 3, 1), 5s);
  REQUIRE_FALSE(after);
  CHECK(after.error().code() == errc::conflict);
  CHECK(after.error().message().find("finished") != std::string::npos);
  REQUIRE(n.ask<v1::AppendResult>(store::k_journal_agent, append("exec/open", 0, 2), 5s));

  v1::ListStreamsRequest lr;
  lr.set_prefix("exec/");
  auto listed = n.ask<v1::ListStreamsResult>(store::k_journal_agent, lr, 5s);
  REQUIRE(listed);
  REQUIRE(listed->streams_size() == 2);
  CHECK(listed->streams(0).stream() == "exec/done");
  CHECK(listed->streams(0).finished_at_ns() > 0);
  CHECK(listed->streams(1).finished_at_ns() == 0);

  // Within a few intervals after the retention period the finished stream is gone.
  int left = 2;
  for (int i = 0; i < 250 && left != 1; ++i) {
    std::this_thread::sleep_for(20ms);
    auto l = n.ask<v1::ListStreamsResult>(store::k_journal_agent, lr, 5s);
    REQUIRE(l);
    left = l->streams_size();
  }
  REQUIRE(left == 1);
  CHECK(metric_sum(n, "af_journal_compacted_streams_total{kind=\"deleted\"}") == 1);
  CHECK(metric_sum(n, "af_journal_compacted_events_total") == 3);
  v1::ReadRequest rr;
  rr.set_stream("exec/open");
  auto open = n.ask<v1::ReadResult>(store::k_journal_agent, rr, 5s);
  REQUIRE(open);
  CHECK(open->events_size() == 2);
}
