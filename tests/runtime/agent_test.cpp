// The agent API on a real node: typed handlers, tell, ask (sync and async replies), errors,
// timeouts, spawn of children, crashes, trace propagation and the message metrics.
#include "af/node.hpp"
#include "af/v1/runtime.pb.h"

#include <catch2/catch.hpp>

#include <google/protobuf/wrappers.pb.h>

#include <atomic>
#include <thread>

using namespace af;
using namespace std::chrono_literals;
using google::protobuf::Int64Value;
using google::protobuf::StringValue;

namespace {

std::unique_ptr<node> make_node(std::shared_ptr<std::vector<std::string>> lines = nullptr) {
  node::options opt;
  log_options lo;
  lo.level = log_level::debug;
  lo.format = "json";
  lo.node = "test-node";
  opt.log =
      make_memory_log_backend(lo, lines ? lines : std::make_shared<std::vector<std::string>>());
  auto n = node::start(std::move(opt));
  REQUIRE(n.has_value());
  return std::move(*n);
}

/// Replies "hello, <name>" and records the envelope it got.
class greeter : public agent_base<greeter> {
public:
  static void define(handlers<greeter>& h) { h.kind("test.greeter").on(&greeter::greet); }
  expected<StringValue> greet(context& ctx, const StringValue& who) {
    if (who.value().empty()) return validation_error("greet: name must not be empty");
    StringValue out;
    out.set_value("hello, " + who.value() + " from " + ctx.name());
    return out;
  }
};

/// Counts tells; answers asks for the count.
class counter : public agent_base<counter> {
public:
  static void define(handlers<counter>& h) {
    h.kind("test.counter").on(&counter::add).on(&counter::get);
  }
  void add(context&, const Int64Value& v) { total_ += v.value(); }
  expected<Int64Value> get(context&, const StringValue&) {
    Int64Value out;
    out.set_value(total_);
    return out;
  }

private:
  std::int64_t total_ = 0;
};

/// Asks the greeter on behalf of its caller (agent -> agent ask with an async reply) and
/// reports the trace ids it saw.
class relay : public agent_base<relay> {
public:
  static void define(handlers<relay>& h) { h.kind("test.relay").on(&relay::forward); }
  void forward(context& ctx, const StringValue& who, responder<StringValue> reply) {
    auto outer_trace = ctx.current()->trace().trace_id_hex();
    ctx.ask<StringValue>(
        "greeter", who, 2s, [reply, outer_trace, &ctx](expected<StringValue> r) mutable {
          if (!r) return reply.fail(r.error());
          // The reply continues the same trace and names what caused it.
          const envelope* e = ctx.current();
          StringValue out;
          out.set_value(r->value() + " | same_trace="
                        + (e->trace().trace_id_hex() == outer_trace ? "yes" : "no")
                        + " correlated=" + (e->correlation_id().is_nil() ? "no" : "yes"));
          reply.reply(out);
        });
  }
};

/// Holds the responder and never replies (the asker must time out).
class sink : public agent_base<sink> {
public:
  static void define(handlers<sink>& h) { h.kind("test.sink").on(&sink::hold).on(&sink::drop); }
  void hold(context&, const StringValue&, responder<StringValue> r) { held_.push_back(r); }
  void drop(context&, const Int64Value&, responder<Int64Value>) {} // responder dropped
private:
  std::vector<responder<StringValue>> held_;
};

/// Asks the sink twice, a long ask then a short one, and greets once between them: reports the
/// order in which the answers came ("greet", "short: timeout", ...), once the short one ended.
class prober : public agent_base<prober> {
public:
  static void define(handlers<prober>& h) { h.kind("test.prober").on(&prober::probe); }
  void probe(context& ctx, const StringValue&, responder<StringValue> reply) {
    auto order = std::make_shared<std::string>();
    ctx.ask<StringValue>("sink", StringValue{}, 30s, [order](expected<StringValue> r) {
      *order +=
          std::string{"long: "} + (r ? "reply" : std::string{to_string(r.error().code())}) + "; ";
    });
    StringValue who;
    who.set_value("p");
    ctx.ask<StringValue>("greeter", who, 30s, [order](expected<StringValue> r) {
      *order += std::string{"greet: "} + (r ? "reply" : "error") + "; ";
    });
    ctx.ask<StringValue>("sink", StringValue{}, 50ms,
                         [order, reply](expected<StringValue> r) mutable {
                           *order += std::string{"short: "}
                                     + (r ? "reply" : std::string{to_string(r.error().code())});
                           StringValue out;
                           out.set_value(*order);
                           reply.reply(out);
                         });
  }
};

/// Throws on demand.
class crasher : public agent_base<crasher> {
public:
  static void define(handlers<crasher>& h) { h.kind("test.crasher").on(&crasher::boom); }
  expected<StringValue> boom(context&, const StringValue&) { throw std::runtime_error("kaboom"); }
};

std::atomic<int> g_stops{0};

/// Spawns children on start; counts its and its children's stops.
class parent : public agent_base<parent> {
public:
  static void define(handlers<parent>& h) { h.kind("test.parent").on(&parent::ping); }
  struct child : agent_base<child> {
    static void define(handlers<child>& h) { h.kind("test.child").on(&child::ping); }
    expected<Int64Value> ping(context&, const Int64Value& v) { return v; }
    void on_stop(context&) override { ++g_stops; }
  };
  void on_start(context& ctx) override {
    for (int i = 0; i < 3; ++i)
      REQUIRE(ctx.spawn<child>("child-" + std::to_string(i)).has_value());
  }
  void on_stop(context&) override { ++g_stops; }
  expected<Int64Value> ping(context&, const Int64Value& v) { return v; }
};

double metric_value(node& n, const std::string& needle) {
  auto text = n.metrics().serialize_text();
  auto pos = text.find(needle);
  if (pos == std::string::npos) return -1;
  auto eol = text.find('\n', pos);
  auto line = text.substr(pos, eol - pos);
  return std::stod(line.substr(line.rfind(' ') + 1));
}

} // namespace

TEST_CASE("ask gets a typed reply - handler errors come back as af::error", "[agent]") {
  auto n = make_node();
  auto g = n->spawn<greeter>("greeter");
  REQUIRE(g);
  StringValue who;
  who.set_value("ada");
  auto r = n->ask<StringValue>(*g, who, 2s);
  REQUIRE(r);
  REQUIRE(r->value() == "hello, ada from greeter");

  auto bad = n->ask<StringValue>(*g, StringValue{}, 2s);
  REQUIRE_FALSE(bad);
  REQUIRE(bad.error().code() == errc::validation);
  REQUIRE(bad.error().message() == "greet: name must not be empty");

  auto wrong_reply = n->ask<Int64Value>(*g, who, 2s);
  REQUIRE_FALSE(wrong_reply);
  REQUIRE(wrong_reply.error().message().find("expected 'google.protobuf.Int64Value'")
          != std::string::npos);
}

TEST_CASE("unknown message types get a validation error and count as rejected", "[agent]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = make_node(lines);
  auto g = n->spawn<greeter>("greeter");
  REQUIRE(g);
  auto r = n->ask<StringValue>(*g, Int64Value{}, 2s);
  REQUIRE_FALSE(r);
  REQUIRE(r.error().code() == errc::validation);
  REQUIRE(r.error().message()
          == "agent 'greeter' (kind 'test.greeter') has no handler for payload type "
             "'google.protobuf.Int64Value'");
  REQUIRE(metric_value(*n, "af_agent_messages_total{agent_id=\"test.greeter\",outcome=\"rejected\"")
          == 1);
  // A tell of an unknown type is not silently dropped either: counted and logged.
  n->tell(*g, Int64Value{});
  for (int i = 0; i < 200 && metric_value(*n, "outcome=\"rejected\"") < 2; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(metric_value(*n, "af_agent_messages_total{agent_id=\"test.greeter\",outcome=\"rejected\"")
          == 2);
  n->shutdown(); // the log lines are read once the node's threads are done
  bool logged = false;
  for (const auto& l : *lines)
    logged = logged || l.find("\"event\":\"message_rejected\"") != std::string::npos;
  REQUIRE(logged);
}

TEST_CASE("tells are processed in order and asks see their effect", "[agent]") {
  auto n = make_node();
  auto c = n->spawn<counter>("counter");
  REQUIRE(c);
  for (int i = 1; i <= 100; ++i) {
    Int64Value v;
    v.set_value(i);
    n->tell(*c, v);
  }
  auto total = n->ask<Int64Value>(*c, StringValue{}, 2s);
  REQUIRE(total);
  REQUIRE(total->value() == 5050);
  // The ask's own count is taken after its reply left: the asker may see the reply first.
  const std::string handled =
      "af_agent_messages_total{agent_id=\"test.counter\",outcome=\"handled\"";
  for (int i = 0; i < 200 && metric_value(*n, handled) < 101; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(metric_value(*n, handled) == 101);
}

TEST_CASE("agents ask agents asynchronously and the trace continues", "[agent]") {
  auto n = make_node();
  REQUIRE(n->spawn<greeter>("greeter"));
  auto rl = n->spawn<relay>("relay");
  REQUIRE(rl);
  StringValue who;
  who.set_value("bob");
  auto r = n->ask<StringValue>(*rl, who, 2s);
  REQUIRE(r);
  REQUIRE(r->value() == "hello, bob from greeter | same_trace=yes correlated=yes");
  REQUIRE(metric_value(*n, "af_agent_ask_duration_seconds_count{agent_id=\"test.relay\"}") == 1);
}

TEST_CASE("asks time out, and a dropped responder answers with an error", "[agent]") {
  auto n = make_node();
  auto s = n->spawn<sink>("sink");
  REQUIRE(s);
  auto r = n->ask<StringValue>(*s, StringValue{}, 100ms);
  REQUIRE_FALSE(r);
  REQUIRE(r.error().code() == errc::timeout);

  auto d = n->ask<Int64Value>(*s, Int64Value{}, 2s);
  REQUIRE_FALSE(d);
  REQUIRE(d.error().code() == errc::internal);
  REQUIRE(d.error().message().find("without replying") != std::string::npos);
}

TEST_CASE("an agent's asks time out at their own deadlines, answered ones never", "[agent]") {
  auto n = make_node();
  REQUIRE(n->spawn<sink>("sink"));
  REQUIRE(n->spawn<greeter>("greeter"));
  auto p = n->spawn<prober>("prober");
  REQUIRE(p);
  // The 50 ms ask, made after a 30 s one, times out first; the greeting in between is answered.
  const auto t0 = std::chrono::steady_clock::now();
  auto r = n->ask<StringValue>(*p, StringValue{}, 5s);
  REQUIRE(r);
  REQUIRE(std::chrono::steady_clock::now() - t0 < 5s);
  REQUIRE(r->value() == "greet: reply; short: timeout");
  // Again: the agent's armed deadline (the first run's 30 s ask) does not delay a later one.
  r = n->ask<StringValue>(*p, StringValue{}, 5s);
  REQUIRE(r);
  REQUIRE(r->value() == "greet: reply; short: timeout");
}

TEST_CASE("an agent that throws answers with an error and stops", "[agent]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = make_node(lines);
  // Temporary: not restarted (the default, transient, is restarted: tests/supervision).
  agent_options once;
  once.restart = sup::restart_policy::temporary;
  auto c = n->spawn_with<crasher>(once, "crasher");
  REQUIRE(c);
  auto r = n->ask<StringValue>(*c, StringValue{}, 2s);
  REQUIRE_FALSE(r);
  REQUIRE(r.error().code() == errc::internal);
  REQUIRE(r.error().message().find("kaboom") != std::string::npos);
  for (int i = 0; i < 200 && n->lookup("crasher"); ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE_FALSE(n->lookup("crasher"));
  REQUIRE(n->lookup("crasher").error().code() == errc::not_found);
  REQUIRE(metric_value(*n, "af_agent_messages_total{agent_id=\"test.crasher\",outcome=\"failed\"")
          == 1);
  // A later ask on the stale handle fails fast instead of hanging.
  auto again = n->ask<StringValue>(*c, StringValue{}, 2s);
  REQUIRE_FALSE(again);
  REQUIRE(again.error().code() == errc::not_found);
}

TEST_CASE("children spawned by an agent stop with it", "[agent]") {
  g_stops = 0;
  auto n = make_node();
  auto p = n->spawn<parent>("parent");
  REQUIRE(p);
  Int64Value v;
  v.set_value(9);
  // The parent's on_start (which spawns the children) runs before its first message.
  REQUIRE(n->ask<Int64Value>(*p, v, 2s)->value() == 9);
  auto c = n->ask<Int64Value>("child-2", v, 2s);
  REQUIRE(c);
  REQUIRE(c->value() == 9);
  REQUIRE(n->agent_count() == 4);
  REQUIRE(n->stop_agent(*p));
  for (int i = 0; i < 200 && g_stops < 4; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(g_stops == 4);
  REQUIRE(n->agent_count() == 0);
}

TEST_CASE("names are unique and validated", "[agent]") {
  auto n = make_node();
  REQUIRE(n->spawn<greeter>("dup"));
  auto again = n->spawn<greeter>("dup");
  REQUIRE_FALSE(again);
  REQUIRE(again.error().code() == errc::conflict);
  REQUIRE(again.error().message().find("'dup' is already registered") != std::string::npos);
  REQUIRE(n->spawn<greeter>("").error().code() == errc::validation);
  REQUIRE(n->spawn<greeter>("af.mine").error().message().find("reserved") != std::string::npos);
  auto missing = n->ask<StringValue>("nobody", StringValue{}, 1s);
  REQUIRE(missing.error().code() == errc::not_found);
  REQUIRE(missing.error().message() == "no agent named 'nobody' on node 'af-node'");
}

TEST_CASE("the control agent reports node status", "[agent][control]") {
  auto n = make_node();
  REQUIRE(n->spawn<greeter>("g1"));
  REQUIRE(n->spawn<greeter>("g2"));
  auto s = n->ask<v1::NodeStatus>(std::string{k_control_agent}, v1::NodeStatusRequest{}, 2s);
  REQUIRE(s);
  REQUIRE(s->name() == "af-node");
  REQUIRE(s->agent_count() == 2);
  REQUIRE(s->uptime_seconds() >= 0);
  REQUIRE(s->scheduler_threads() == 2);
}

TEST_CASE("agents see the node's services", "[agent]") {
  struct probe : agent_base<probe> {
    static void define(handlers<probe>& h) { h.kind("test.probe").on(&probe::ask); }
    expected<StringValue> ask(context& ctx, const StringValue&) {
      auto a = ctx.next_id(), b = ctx.next_id();
      StringValue out;
      out.set_value(std::string(a < b ? "ids-ok" : "ids-bad") + " "
                    + (ctx.now().time_since_epoch().count() > 0 ? "clock-ok" : "clock-bad") + " "
                    + ctx.tenant());
      ctx.log().info("probe_ran", "probe ran", {{"rng", ctx.rng().uniform(10)}});
      return out;
    }
  };
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = make_node(lines);
  auto p = n->spawn<probe>("probe");
  REQUIRE(p);
  auto r = n->ask<StringValue>(*p, StringValue{}, 2s);
  REQUIRE(r);
  REQUIRE(r->value() == "ids-ok clock-ok default");
  n->shutdown();
  bool found = false;
  for (const auto& l : *lines)
    if (l.find("\"event\":\"probe_ran\"") != std::string::npos) {
      found = true;
      REQUIRE(l.find("\"trace_id\":\"") != std::string::npos);
      REQUIRE(l.find("\"tenant\":\"default\"") != std::string::npos);
      REQUIRE(l.find("\"node\":\"test-node\"") != std::string::npos);
    }
  REQUIRE(found);
}
