// Supervisors on a real node: strategies restart exactly the right children in the right order
// (for a thrown exception, fail() and an abnormal exit), restart policies, intensity and
// escalation up to the node, shutdown with kill timeouts, introspection, the recover hook and
// agents that supervise their own children, and a crash storm without leaks.
#include "af/node.hpp"
#include "af/sup/supervisor.hpp"
#include "caf_glue.hpp"
#include "supervisor_actor.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include <google/protobuf/wrappers.pb.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <thread>

using namespace af;
using google::protobuf::StringValue;
using namespace std::chrono_literals;

namespace {

/// What the children did, in order: "start:<name>" when an instance is made (in the
/// supervisor, so in start order), "stop:<name>" when it stops.
struct journal {
  std::mutex mtx;
  std::vector<std::string> events;
  void add(std::string e) {
    std::lock_guard g{mtx};
    events.push_back(std::move(e));
  }
  std::vector<std::string> take() {
    std::lock_guard g{mtx};
    return std::exchange(events, {});
  }
  std::size_t size() {
    std::lock_guard g{mtx};
    return events.size();
  }
};

/// A child that crashes on request: "throw", "fail", "stop"; answers anything else.
class worker : public agent_base<worker> {
public:
  worker(std::string name, std::shared_ptr<journal> j) : name_(std::move(name)), j_(std::move(j)) {
    j_->add("start:" + name_);
  }
  static void define(handlers<worker>& h) { h.kind("test.worker").on(&worker::on_cmd); }
  void recover(context&, const restart_info& info) override {
    j_->add("recover:" + name_ + ":" + std::to_string(info.restarts) + ":" + info.last_exit);
  }
  void on_stop(context&) override { j_->add("stop:" + name_); }
  expected<StringValue> on_cmd(context& ctx, const StringValue& m) {
    if (m.value() == "throw") throw std::runtime_error("kaboom");
    if (m.value() == "fail") {
      ctx.fail(error{errc::transient, "dependency down"});
      return error{errc::transient, "failing"};
    }
    if (m.value() == "stop") {
      ctx.stop();
      return StringValue{};
    }
    StringValue r;
    r.set_value(name_ + ":" + m.value());
    return r;
  }

private:
  std::string name_;
  std::shared_ptr<journal> j_;
};

node::options quiet_options(std::shared_ptr<std::vector<std::string>> lines = nullptr,
                            std::vector<std::pair<std::string, std::string>> sets = {}) {
  node::options o;
  config_sources src;
  for (auto& [k, v] : sets)
    src.flags.push_back({k, v, "test"});
  auto cfg = config::load(src);
  REQUIRE(cfg);
  o.cfg = std::move(*cfg);
  log_options lo;
  lo.level = log_level::info;
  lo.format = "json";
  o.log = make_memory_log_backend(lo, lines ? lines : std::make_shared<std::vector<std::string>>());
  return o;
}

template <class F>
bool eventually(F&& f, duration timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}

sup::child_spec worker_child(const std::string& name, const std::shared_ptr<journal>& j,
                             sup::restart_policy p = sup::restart_policy::permanent) {
  auto c = sup::agent_child<worker>(name, name, j);
  c.restart = p;
  return c;
}

sup::supervisor_spec spec_of(std::string name, sup::strategy how,
                             std::vector<sup::child_spec> children, std::uint32_t max = 10) {
  sup::supervisor_spec s;
  s.name = std::move(name);
  s.policy.how = how;
  s.policy.limits = {max, 5s};
  s.policy.delay.base = duration::zero(); // restarts at once: the order is what is tested
  s.children = std::move(children);
  return s;
}

StringValue text(std::string v) {
  StringValue s;
  s.set_value(std::move(v));
  return s;
}

/// Waits until `name` is bound to an agent other than `old` that answers.
bool answers_again(node& n, const std::string& name, const agent_ref& old = {}) {
  return eventually([&] {
    auto r = n.lookup(name);
    if (!r || (old.valid() && *r == old)) return false;
    auto a = n.ask<StringValue>(*r, text("ping"), 2s);
    return a.has_value() && a->value() == name + ":ping";
  });
}

enum class failure_mode { exception, fail, abnormal_exit };

void make_fail(node& n, const std::string& name, failure_mode mode) {
  auto r = n.lookup(name);
  REQUIRE(r);
  switch (mode) {
  case failure_mode::exception:
    n.tell(*r, text("throw"));
    break;
  case failure_mode::fail:
    n.tell(*r, text("fail"));
    break;
  case failure_mode::abnormal_exit:
    caf::anon_send_exit(to_actor(*r), caf::exit_reason::kill);
    break;
  }
}

std::uint64_t child_restarts(sup::supervisor_ref& s) {
  auto w = s.which_children();
  REQUIRE(w);
  std::uint64_t n = 0;
  for (const auto& c : w->children())
    n += c.restarts();
  return n;
}

double metric(node& n, const std::string& prefix) {
  auto text = n.metrics().serialize_text();
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(prefix)) sum += std::stod(line.substr(line.rfind(' ') + 1));
  return sum;
}

} // namespace

TEST_CASE("each strategy restarts exactly the right children in the right order",
          "[supervision][strategy]") {
  auto mode = GENERATE(failure_mode::exception, failure_mode::fail, failure_mode::abnormal_exit);
  auto how =
      GENERATE(sup::strategy::one_for_one, sup::strategy::one_for_all, sup::strategy::rest_for_one);
  CAPTURE(static_cast<int>(mode), std::string{sup::to_string(how)});
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto started = n.start_child(sup::supervisor_child(
      spec_of("s1", how, {worker_child("a", j), worker_child("b", j), worker_child("c", j)})));
  REQUIRE(started);
  for (auto name : {"a", "b", "c"})
    REQUIRE(answers_again(n, name));
  REQUIRE(j->take() == std::vector<std::string>{"start:a", "start:b", "start:c"});

  auto old_b = *n.lookup("b");
  make_fail(n, "b", mode);
  REQUIRE(answers_again(n, "b", old_b));
  for (auto name : {"a", "c"})
    REQUIRE(answers_again(n, name));

  const std::string why = mode == failure_mode::exception ? "exception: kaboom"
                          : mode == failure_mode::fail    ? "fail: transient: dependency down"
                                                          : "killed";
  std::vector<std::string> expected_events;
  switch (how) {
  case sup::strategy::one_for_one:
    expected_events = {"stop:b", "start:b", "recover:b:1:" + why};
    break;
  case sup::strategy::one_for_all:
    expected_events = {"stop:b",
                       "stop:c",
                       "stop:a",
                       "start:a",
                       "recover:a:1:shutdown",
                       "start:b",
                       "recover:b:1:" + why,
                       "start:c",
                       "recover:c:1:shutdown"};
    break;
  case sup::strategy::rest_for_one:
    expected_events = {
        "stop:b", "stop:c", "start:b", "recover:b:1:" + why, "start:c", "recover:c:1:shutdown"};
    break;
  default:
    break;
  }
  // recover runs in the new instance (on its own thread): compare starts/stops in order, and
  // the recover lines as a set.
  REQUIRE(eventually([&] { return j->size() >= expected_events.size(); }));
  auto got = j->take();
  auto split = [](const std::vector<std::string>& v, bool recover) {
    std::vector<std::string> out;
    for (auto& e : v)
      if (e.starts_with("recover:") == recover) out.push_back(e);
    if (recover) std::sort(out.begin(), out.end());
    return out;
  };
  CHECK(split(got, false) == split(expected_events, false));
  CHECK(split(got, true) == split(expected_events, true));
}

TEST_CASE("restart policies: permanent, transient and temporary", "[supervision][policy]") {
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto s = n.start_child(
      sup::supervisor_child(spec_of("s2", sup::strategy::one_for_one,
                                    {worker_child("perm", j, sup::restart_policy::permanent),
                                     worker_child("trans", j, sup::restart_policy::transient),
                                     worker_child("temp", j, sup::restart_policy::temporary)})));
  REQUIRE(s);
  auto sr = sup::supervisor_ref{n, *s};
  for (auto name : {"perm", "trans", "temp"})
    REQUIRE(answers_again(n, name));

  SECTION("a normal exit restarts only the permanent child") {
    for (auto name : {"perm", "trans", "temp"}) {
      auto old = *n.lookup(name);
      n.tell(old, text("stop"));
      if (std::string{name} == "perm") REQUIRE(answers_again(n, name, old));
    }
    REQUIRE(eventually([&] {
      auto w = sr.which_children();
      return w && w->children_size() == 2 && w->children(1).state() == "stopped";
    }));
    auto w = sr.which_children();
    CHECK(w->children(0).id() == "perm");
    CHECK(w->children(0).state() == "running");
    CHECK(w->children(0).restarts() == 1);
    CHECK(w->children(1).id() == "trans");
    CHECK(w->children(1).last_exit() == "normal");
    CHECK_FALSE(n.lookup("trans"));
    CHECK_FALSE(n.lookup("temp")); // temporary: forgotten
  }
  SECTION("a crash restarts permanent and transient children, not temporary ones") {
    for (auto name : {"perm", "trans", "temp"}) {
      auto old = *n.lookup(name);
      n.tell(old, text("throw"));
      if (std::string{name} != "temp") REQUIRE(answers_again(n, name, old));
    }
    REQUIRE(eventually([&] {
      auto w = sr.which_children();
      return w && w->children_size() == 2;
    }));
    CHECK_FALSE(n.lookup("temp"));
    CHECK(child_restarts(sr) == 2);
  }
}

TEST_CASE("the (max_restarts+1)-th failure within the period escalates",
          "[supervision][intensity]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto nd = node::start(quiet_options(lines));
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto s = n.start_child(sup::supervisor_child(
      spec_of("s3", sup::strategy::one_for_one, {worker_child("x", j), worker_child("y", j)}, 2)));
  REQUIRE(s);
  auto sr = sup::supervisor_ref{n, *s};
  REQUIRE(answers_again(n, "x"));
  REQUIRE(answers_again(n, "y"));
  for (int i = 0; i < 2; ++i) {
    auto old = *n.lookup("x");
    n.tell(old, text("throw"));
    REQUIRE(answers_again(n, "x", old));
  }
  CHECK(child_restarts(sr) == 2);
  CHECK(metric(n, "af_supervisor_escalations_total{") == 0);
  j->take();
  n.tell(*n.lookup("x"), text("throw"));
  // The supervisor stops the remaining children in reverse order and exits "escalated"; its
  // parent (the dynamic agents supervisor, s3 being permanent) starts it again from its spec.
  REQUIRE(eventually([&] { return metric(n, "af_supervisor_escalations_total{") == 1; }));
  REQUIRE(answers_again(n, "x"));
  REQUIRE(answers_again(n, "y"));
  auto ev = j->take();
  REQUIRE(ev.size() >= 3);
  CHECK(ev[0] == "stop:x");
  CHECK(ev[1] == "stop:y");
  CHECK(ev[2] == "start:x");
  n.shutdown();
  bool logged = false;
  for (auto& l : *lines)
    if (l.find("\"event\":\"supervisor_escalated\"") != std::string::npos
        && l.find("exceeded 2 restarts") != std::string::npos)
      logged = true;
  CHECK(logged);
}

TEST_CASE("a nested tree escalates level by level and the root stops the node",
          "[supervision][intensity]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto nd = node::start(quiet_options(
      lines, {{"supervision.root.max_restarts", "0"}, {"supervision.agents.max_restarts", "0"}}));
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto inner = spec_of("inner", sup::strategy::one_for_one, {worker_child("leaf", j)}, 0);
  auto outer = spec_of("outer", sup::strategy::one_for_one, {sup::supervisor_child(inner)}, 0);
  REQUIRE(n.start_child(sup::supervisor_child(outer)));
  REQUIRE(answers_again(n, "leaf"));
  CHECK_FALSE(n.failure());
  n.tell(*n.lookup("leaf"), text("throw"));
  REQUIRE(n.wait_stopped(20s));
  auto f = n.failure();
  REQUIRE(f);
  CHECK(f->message().find("root supervisor gave up") != std::string::npos);
  n.shutdown();
  // inner, outer, the agents supervisor and the root each escalated once, in that order.
  std::vector<std::string> escalated;
  bool node_failed = false;
  for (auto& l : *lines) {
    if (l.find("\"event\":\"supervisor_escalated\"") != std::string::npos) {
      auto p = l.find("supervisor '");
      escalated.push_back(l.substr(p + 12, l.find('\'', p + 12) - p - 12));
    }
    if (l.find("\"event\":\"node_failed\"") != std::string::npos) node_failed = true;
  }
  CHECK(escalated == std::vector<std::string>{"inner", "outer", "af.sup.agents", "af.sup.root"});
  CHECK(node_failed);
}

TEST_CASE("backoff: first restart at once, then full jitter up to a capped bound",
          "[supervision][backoff]") {
  sup::backoff b{10ms, 80ms, 1s};
  af::rng r{42};
  CHECK(b.delay(1, r) == duration::zero());
  for (std::uint32_t n = 2; n < 10; ++n) {
    auto bound = std::min<duration>(10ms * (1u << (n - 2)), 80ms);
    duration most{};
    double sum = 0;
    for (int i = 0; i < 2000; ++i) {
      auto d = b.delay(n, r);
      REQUIRE(d >= duration::zero());
      REQUIRE(d <= bound);
      most = std::max(most, d);
      sum += static_cast<double>(d.count());
    }
    CHECK(most > bound * 9 / 10);
    CHECK(sum / 2000 == Approx(static_cast<double>(bound.count()) / 2).epsilon(0.1));
  }
  af::rng r1{7}, r2{7};
  for (int i = 0; i < 100; ++i)
    CHECK(b.delay(5, r1) == b.delay(5, r2));
  CHECK(b.delay(1000, r) <= 80ms); // no overflow
}

TEST_CASE("a child that keeps crashing waits longer between restarts", "[supervision][backoff]") {
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto spec = spec_of("s4", sup::strategy::one_for_one, {worker_child("flaky", j)}, 100);
  spec.policy.delay = {40ms, 1s, 10s};
  auto s = n.start_child(sup::supervisor_child(spec));
  REQUIRE(s);
  auto sr = sup::supervisor_ref{n, *s};
  REQUIRE(answers_again(n, "flaky"));
  // Restart 1 is immediate; restart 4 waits up to 40 * 2^2 = 160 ms: seen as "restarting".
  bool saw_restarting = false;
  for (int i = 0; i < 6; ++i) {
    auto old = *n.lookup("flaky");
    n.tell(old, text("throw"));
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(eventually([&] {
      auto w = sr.which_children();
      if (w && w->children(0).state() == "restarting") saw_restarting = true;
      return w && w->children(0).restarts() == static_cast<std::uint64_t>(i + 1);
    }));
    REQUIRE(answers_again(n, "flaky", old));
    (void)t0;
  }
  CHECK(saw_restarting);
  auto w = sr.which_children();
  CHECK(w->children(0).restarts() == 6);
}

namespace {
/// A raw CAF child that ignores requests to stop (it traps exits).
expected<caf::actor> stubborn(caf::actor_system& sys) {
  return sys.spawn([](caf::event_based_actor* self) -> caf::behavior {
    self->set_exit_handler([](caf::exit_msg&) {});
    return {[](int x) { return x; }};
  });
}
} // namespace

TEST_CASE("shutdown: a child that ignores its stop is killed after its timeout",
          "[supervision][shutdown]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto nd = node::start(quiet_options(lines));
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto stub = sup::actor_child("stubborn", stubborn, "test.stubborn");
  stub.shutdown = 150ms;
  auto s = n.start_child(sup::supervisor_child(spec_of(
      "s5", sup::strategy::one_for_one, {worker_child("w1", j), stub, worker_child("w2", j)})));
  REQUIRE(s);
  auto sr = sup::supervisor_ref{n, *s};
  REQUIRE(answers_again(n, "w2"));

  SECTION("terminate_child reports the kill") {
    auto t0 = std::chrono::steady_clock::now();
    auto r = sr.terminate_child("stubborn");
    REQUIRE(r);
    CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
    REQUIRE(r->killed_size() == 1);
    CHECK(r->killed(0) == "stubborn");
    CHECK(r->state() == "stopped");
    auto again = sr.restart_child("stubborn");
    REQUIRE(again);
    CHECK(again->state() == "running");
  }
  SECTION("stopping the supervisor stops children in reverse order, killing the stubborn one") {
    j->take();
    auto agents = sup::supervisor_ref::find(n, k_agents_supervisor);
    REQUIRE(agents);
    auto r = agents->terminate_child("s5");
    REQUIRE(r);
    CHECK(r->state() == "deleted");
    CHECK(j->take() == std::vector<std::string>{"stop:w2", "stop:w1"});
    n.shutdown();
    bool killed = false, reported = false;
    for (auto& l : *lines) {
      if (l.find("\"event\":\"child_killed\"") != std::string::npos
          && l.find("stubborn") != std::string::npos)
        killed = true;
      if (l.find("\"event\":\"supervisor_killed_children\"") != std::string::npos
          && l.find("stubborn") != std::string::npos)
        reported = true;
    }
    CHECK(killed);
    CHECK(reported);
  }
}

TEST_CASE("introspection and dynamic control of children", "[supervision][control]") {
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  auto s = n.start_child(
      sup::supervisor_child(spec_of("s6", sup::strategy::one_for_one, {worker_child("k1", j)})));
  REQUIRE(s);
  auto sr = sup::supervisor_ref{n, *s};
  REQUIRE(answers_again(n, "k1"));

  auto added = sr.start_child(worker_child("k2", j));
  REQUIRE(added);
  REQUIRE(answers_again(n, "k2"));
  CHECK(sr.start_child(worker_child("k2", j)).error().code() == errc::conflict);
  auto counts = sr.count_children();
  REQUIRE(counts);
  CHECK(counts->specs() == 2);
  CHECK(counts->active() == 2);
  CHECK(counts->workers() == 2);
  CHECK(counts->supervisors() == 0);

  CHECK(sr.delete_child("k1").error().code() == errc::conflict); // running
  REQUIRE(sr.terminate_child("k1"));
  CHECK_FALSE(n.lookup("k1"));
  CHECK(sr.count_children()->active() == 1);
  REQUIRE(sr.restart_child("k1"));
  REQUIRE(answers_again(n, "k1"));
  REQUIRE(sr.terminate_child("k1"));
  REQUIRE(sr.delete_child("k1"));
  CHECK(sr.count_children()->specs() == 1);
  CHECK(sr.terminate_child("nope").error().code() == errc::not_found);

  auto t = n.tree();
  REQUIRE(t);
  CHECK(t->name() == "af.sup.root");
  REQUIRE(t->children_size() == 2);
  CHECK(t->children(0).id() == "af.sup.system");
  CHECK(t->children(0).subtree().children(0).id() == "af.control");
  CHECK(t->children(1).id() == "af.sup.agents");
  const auto& agents = t->children(1).subtree();
  CHECK(agents.strategy() == "dynamic");
  REQUIRE(agents.children_size() == 1);
  CHECK(agents.children(0).id() == "s6");
  CHECK(agents.children(0).subtree().children(0).id() == "k2");
  auto text = sup::render_tree(*t);
  CHECK(text.find("af.sup.agents") != std::string::npos);
  CHECK(text.find("k2  agent test.worker  permanent  running  restarts=0") != std::string::npos);
}

namespace {
/// Spawns two children on start; its children's supervisor allows one restart.
class parent_agent : public agent_base<parent_agent> {
public:
  explicit parent_agent(std::shared_ptr<journal> j) : j_(std::move(j)) { j_->add("start:parent"); }
  static void define(handlers<parent_agent>& h) {
    h.kind("test.parent").on(&parent_agent::on_ping);
  }
  sup::flags child_supervision() const override {
    sup::flags f;
    f.limits = {1, 5s};
    f.delay.base = duration::zero();
    return f;
  }
  void on_start(context& ctx) override {
    REQUIRE(ctx.spawn<worker>("kid1", "kid1", j_));
    REQUIRE(ctx.spawn<worker>("kid2", "kid2", j_));
  }
  void on_stop(context&) override { j_->add("stop:parent"); }
  expected<StringValue> on_ping(context&, const StringValue&) { return text("parent"); }

private:
  std::shared_ptr<journal> j_;
};
} // namespace

TEST_CASE("an agent supervises its own children and fails when they fail too often",
          "[supervision][agent]") {
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  REQUIRE(n.spawn<parent_agent>("parent", j));
  REQUIRE(answers_again(n, "kid1"));
  REQUIRE(answers_again(n, "kid2"));
  auto t = n.tree();
  REQUIRE(t);
  const auto& p = t->children(1).subtree().children(0);
  CHECK(p.id() == "parent");
  CHECK(p.subtree().name() == "af.children.parent");
  CHECK(p.subtree().children_size() == 2);

  auto old = *n.lookup("kid1");
  n.tell(old, text("throw"));
  REQUIRE(answers_again(n, "kid1", old)); // restarted by the parent's children supervisor
  auto parent_before = *n.lookup("parent");
  n.tell(*n.lookup("kid1"), text("throw")); // second restart in 5 s: escalates to the parent
  // The parent fails; the agents supervisor restarts it (transient), and it spawns new kids.
  REQUIRE(eventually([&] {
    auto r = n.lookup("parent");
    return r && !(*r == parent_before);
  }));
  REQUIRE(answers_again(n, "kid1"));
  REQUIRE(answers_again(n, "kid2"));
  auto agents = sup::supervisor_ref::find(n, k_agents_supervisor);
  REQUIRE(agents);
  auto w = agents->which_children();
  REQUIRE(w);
  REQUIRE(w->children_size() == 1);
  CHECK(w->children(0).restarts() == 1);
  CHECK(w->children(0).last_exit().find("escalated") != std::string::npos);
}

TEST_CASE("agents spawned through the node are supervised (transient by default)",
          "[supervision][agent]") {
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  REQUIRE(n.spawn<worker>("solo", "solo", j));
  REQUIRE(answers_again(n, "solo"));
  auto old = *n.lookup("solo");
  n.tell(old, text("throw"));
  REQUIRE(answers_again(n, "solo", old));
  CHECK(metric(n, "af_supervisor_restarts_total{child=\"test.worker\",reason=\"exception\","
                  "supervisor=\"af.sup.agents\"}")
        == 1);
  n.tell(*n.lookup("solo"), text("stop"));
  REQUIRE(eventually([&] { return !n.lookup("solo"); }));
  auto agents = sup::supervisor_ref::find(n, k_agents_supervisor);
  CHECK(agents->count_children()->specs() == 0);
}

TEST_CASE("crash storm: 10,000 crashes across 1,000 agents while others keep answering",
          "[supervision][storm]") {
  auto nd = node::start(quiet_options());
  REQUIRE(nd);
  auto& n = **nd;
  auto j = std::make_shared<journal>();
  const auto actors_before = n.actor_count();
  std::vector<sup::child_spec> kids;
  constexpr int k_children = 1000;
  for (int i = 0; i < k_children; ++i) {
    auto c = sup::agent_child<worker>("v" + std::to_string(i), "v" + std::to_string(i),
                                      std::shared_ptr<journal>{});
    kids.push_back(std::move(c));
  }
  // The journal is not used by these workers: pass a throwaway one per instance.
  for (auto& c : kids) {
    auto name = c.id;
    c.make_agent = [name]() { return std::make_unique<worker>(name, std::make_shared<journal>()); };
  }
  auto spec = spec_of("storm", sup::strategy::one_for_one, std::move(kids), 1000000);
  auto s = n.start_child(sup::supervisor_child(spec));
  REQUIRE(s);
  auto sr = sup::supervisor_ref{n, *s};
  REQUIRE(eventually([&] { return sr.count_children()->active() == k_children; }));
  for (int i = 0; i < 4; ++i)
    REQUIRE(n.spawn<worker>("steady" + std::to_string(i), "steady" + std::to_string(i), j));
  const auto actors_started = n.actor_count();

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, unanswered{0};
  std::thread asker([&] {
    int i = 0;
    while (!stop) {
      auto name = "steady" + std::to_string(i++ % 4);
      auto r = n.ask<StringValue>(name, text("ping"), 2s);
      if (r && r->value() == name + ":ping")
        ++answered;
      else
        ++unanswered;
    }
  });
  af::rng r{1};
  std::uint64_t restarts = 0;
  while (restarts < 10000) {
    for (int i = 0; i < 500; ++i) {
      auto name = "v" + std::to_string(r.uniform(k_children));
      if (auto ref = n.lookup(name)) n.tell(*ref, text(r.uniform(2) == 0 ? "throw" : "fail"));
    }
    std::this_thread::sleep_for(5ms);
    restarts = child_restarts(sr);
  }
  stop = true;
  asker.join();
  CHECK(answered > 0);
  CHECK(unanswered == 0);
  // Crash requests still queued in mailboxes land after the loop: wait until restarts settle.
  REQUIRE(eventually(
      [&] {
        auto before = child_restarts(sr);
        std::this_thread::sleep_for(200ms);
        return child_restarts(sr) == before && sr.count_children()->active() == k_children;
      },
      30s));
  CHECK(child_restarts(sr) >= 10000);
  REQUIRE(eventually([&] { return n.actor_count() == actors_started; }, 30s));
  for (int i = 0; i < k_children; ++i) {
    auto name = "v" + std::to_string(i);
    auto a = n.ask<StringValue>(name, text("ping"), 5s);
    INFO(name << ": " << (a ? std::string{"ok"} : a.error().to_string()));
    REQUIRE(a);
    REQUIRE(a->value() == name + ":ping");
  }
  auto agents = sup::supervisor_ref::find(n, k_agents_supervisor);
  REQUIRE(agents->terminate_child("storm"));
  for (int i = 0; i < 4; ++i)
    REQUIRE(agents->terminate_child("steady" + std::to_string(i)));
  REQUIRE(eventually([&] { return n.actor_count() == actors_before; }, 30s));
}
