// Routers (handlers::route, context::route_kinds): the node hands an agent the virtual names
// `Kind/id` of the kinds it claimed; it delegates each envelope to the agent it picks (the reply
// goes straight to the asker) or refuses it (an error reply for an ask, a logged and counted
// refusal for a tell). The placement agent (af/cluster/placement.hpp) is built on this.
#include "af/metrics.hpp"
#include "af/node.hpp"

#include <catch2/catch.hpp>

#include <google/protobuf/wrappers.pb.h>

#include <atomic>
#include <sstream>
#include <thread>

using namespace af;
using namespace std::chrono_literals;
using google::protobuf::StringValue;

namespace {

/// What an agent's route_kinds call returned: -1 not yet, 0 ok, else 1 + the error code.
using claim = std::atomic<int>;

void record(claim& c, const status& st) { c = st ? 0 : 1 + static_cast<int>(st.error().code()); }
int code_of(errc e) { return 1 + static_cast<int>(e); }

int wait_for(const claim& c) {
  for (int i = 0; i < 400 && c.load() < 0; ++i)
    std::this_thread::sleep_for(5ms);
  return c.load();
}

/// Answers with its own name and the name the envelope was addressed to.
class backend : public agent_base<backend> {
public:
  static void define(handlers<backend>& h) { h.kind("test.backend").on(&backend::echo); }
  expected<StringValue> echo(context& ctx, const StringValue& v) {
    StringValue out;
    out.set_value(v.value() + " at " + ctx.name() + " for " + ctx.current()->receiver().name);
    return out;
  }
};

/// Routes shard/<n> to backend-<n mod 2>; "shard/bad" is refused, "shard/lost" has no target.
class shard_router : public agent_base<shard_router> {
public:
  explicit shard_router(std::shared_ptr<claim> claimed) : claimed_(std::move(claimed)) {}
  static void define(handlers<shard_router>& h) {
    h.kind("test.router").route(&shard_router::route).on(&shard_router::on_command);
  }
  void on_start(context& ctx) override { record(*claimed_, ctx.route_kinds({"shard"})); }
  expected<agent_ref> route(context& ctx, const envelope& e) {
    const auto id = e.receiver().name.substr(e.receiver().name.find('/') + 1);
    if (id == "bad") return validation_error("shard id 'bad' is not a number");
    if (id == "lost") return ctx.lookup_registered("nobody");
    if (id == "self") return ctx.lookup(e.receiver().name); // a bug: would loop forever
    // Its own names come back to itself through lookup; lookup_registered bypasses that.
    if (ctx.lookup(e.receiver().name)->ctrl() != ctx.self_ref().ctrl())
      return error{errc::internal, "lookup of a claimed name is not the router"};
    return ctx.lookup_registered("backend-" + std::to_string(std::stoi(id) % 2));
  }
  void on_command(context& ctx, const StringValue& v) {
    if (v.value() == "stop") ctx.stop();
  }

private:
  std::shared_ptr<claim> claimed_;
};

/// Declares no router.
class plain : public agent_base<plain> {
public:
  explicit plain(std::shared_ptr<claim> claimed) : claimed_(std::move(claimed)) {}
  static void define(handlers<plain>& h) { h.kind("test.plain").on(&plain::on_command); }
  void on_start(context& ctx) override { record(*claimed_, ctx.route_kinds({"other"})); }
  void on_command(context&, const StringValue&) {}

private:
  std::shared_ptr<claim> claimed_;
};

StringValue str(std::string s) {
  StringValue v;
  v.set_value(std::move(s));
  return v;
}

double rejected_by_router(node& n) {
  std::istringstream text{n.metrics().serialize_text()};
  double sum = 0;
  for (std::string line; std::getline(text, line);)
    if (line.starts_with("af_agent_messages_total{")
        && line.find("agent_id=\"test.router\"") != std::string::npos
        && line.find("outcome=\"rejected\"") != std::string::npos)
      sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  return sum;
}

} // namespace

TEST_CASE("a router receives the virtual names it claimed and delegates them", "[agent][router]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  node::options opt;
  log_options lo;
  lo.level = log_level::info;
  lo.format = "json";
  opt.log = make_memory_log_backend(lo, lines);
  auto started = node::start(std::move(opt));
  REQUIRE(started);
  auto& n = **started;
  REQUIRE(n.spawn<backend>("backend-0"));
  REQUIRE(n.spawn<backend>("backend-1"));
  auto claimed = std::make_shared<claim>(-1);
  REQUIRE(n.spawn<shard_router>("router", claimed));
  REQUIRE(wait_for(*claimed) == 0);

  // The lookup of a claimed name is the router, under the name asked for; the envelope reaches
  // the agent it picks readdressed to that agent.
  auto ref = n.lookup("shard/7");
  REQUIRE(ref);
  CHECK(ref->name() == "shard/7");
  auto r = n.ask<StringValue>("shard/7", str("hi"), 10s);
  REQUIRE(r);
  CHECK(r->value() == "hi at backend-1 for backend-1");
  CHECK(n.ask<StringValue>("shard/4", str("yo"), 10s)->value() == "yo at backend-0 for backend-0");

  // Refusals: the router's error is the ask's reply; no target is not_found.
  auto bad = n.ask<StringValue>("shard/bad", str("x"), 10s);
  REQUIRE(!bad);
  CHECK(bad.error().code() == errc::validation);
  CHECK(bad.error().message() == "shard id 'bad' is not a number");
  auto lost = n.ask<StringValue>("shard/lost", str("x"), 10s);
  REQUIRE(!lost);
  CHECK(lost.error().code() == errc::not_found);
  auto self = n.ask<StringValue>("shard/self", str("x"), 10s);
  REQUIRE(!self);
  CHECK(self.error().code() == errc::internal);
  CHECK(self.error().message().find("to itself") != std::string::npos);
  // A tell that is refused is counted and logged.
  auto refused = n.lookup("shard/bad");
  REQUIRE(refused);
  n.tell(*refused, str("x"));
  for (int i = 0; i < 200 && rejected_by_router(n) < 4; ++i)
    std::this_thread::sleep_for(5ms);
  CHECK(rejected_by_router(n) == 4);

  // A kind nobody claimed: not_found naming the kind.
  auto other = n.lookup("other/1");
  REQUIRE(!other);
  CHECK(other.error().code() == errc::not_found);
  CHECK(other.error().message().find("kind 'other'") != std::string::npos);

  // One router per kind; an agent without a router cannot claim kinds.
  auto second = std::make_shared<claim>(-1);
  REQUIRE(n.spawn<shard_router>("router-2", second));
  CHECK(wait_for(*second) == code_of(errc::conflict));
  auto no_router = std::make_shared<claim>(-1);
  REQUIRE(n.spawn<plain>("plain", no_router));
  CHECK(wait_for(*no_router) == code_of(errc::validation));

  // When the router stops, its names are plain names again.
  auto router = n.lookup("router");
  REQUIRE(router);
  n.tell(*router, str("stop"));
  for (int i = 0; i < 200 && n.lookup("shard/7"); ++i)
    std::this_thread::sleep_for(5ms);
  auto gone = n.lookup("shard/7");
  REQUIRE(!gone);
  CHECK(gone.error().message() == "no agent named 'shard/7' on node '" + n.name() + "'");

  n.shutdown();
  bool logged = false;
  for (const auto& l : *lines)
    logged |= l.find("\"event\":\"route_refused\"") != std::string::npos
              && l.find("shard/bad") != std::string::npos;
  CHECK(logged);
}

namespace {
/// Claims its kind through routed_kinds(): bound at spawn, before the agent runs.
class early_router : public agent_base<early_router> {
public:
  static void define(handlers<early_router>& h) {
    h.kind("test.early_router").route(&early_router::route);
  }
  std::vector<std::string> routed_kinds() const override { return {"early"}; }
  expected<agent_ref> route(context& ctx, const envelope&) {
    return ctx.lookup_registered("backend-0");
  }
};
} // namespace

TEST_CASE("routed_kinds are claimed when the router is spawned", "[agent][router]") {
  node::options opt;
  auto started = node::start(std::move(opt));
  REQUIRE(started);
  auto& n = **started;
  REQUIRE(n.spawn<backend>("backend-0"));
  REQUIRE(n.spawn<early_router>("early-router"));
  // No wait: the claim was made before spawn returned.
  auto ref = n.lookup("early/9");
  REQUIRE(ref);
  CHECK(ref->name() == "early/9");
  auto r = n.ask<StringValue>("early/9", str("hi"), 10s);
  REQUIRE(r);
  CHECK(r->value() == "hi at backend-0 for backend-0");
  // Routers of different kinds live side by side (placement and singletons on one node); a
  // second router for a kind already routed is refused.
  auto shards = std::make_shared<claim>(-1);
  REQUIRE(n.spawn<shard_router>("shard-router", shards));
  CHECK(wait_for(*shards) == 0);
  auto s = n.ask<StringValue>("shard/2", str("x"), 10s); // to backend-0
  REQUIRE(s);
  CHECK(n.ask<StringValue>("early/9", str("hi"), 10s));
  auto again = std::make_shared<claim>(-1);
  REQUIRE(n.spawn<shard_router>("shard-router-2", again));
  CHECK(wait_for(*again) == code_of(errc::conflict));
  n.shutdown();
}
