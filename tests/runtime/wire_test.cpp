// Envelopes on the wire (CAF middleman, TCP on 127.0.0.1): the control endpoint round trip, a
// hostile peer sending undecodable envelopes, and a peer sending a type the node does not know.
#include "af/client.hpp"
#include "af/node.hpp"
#include "af/v1/runtime.pb.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <catch2/catch.hpp>

#include <thread>

using namespace af;
using namespace std::chrono_literals;

namespace {

/// What a hostile or broken peer sends under the envelope's CAF type name: arbitrary bytes.
struct fake_envelope {
  std::string bytes;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, fake_envelope& x) {
  return f(caf::meta::type_name("af.envelope"), x.bytes);
}

/// A type only the peer knows.
struct stranger {
  int x = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stranger& x) {
  return f(caf::meta::type_name("test.stranger"), x.x);
}

std::unique_ptr<node> listening_node(std::shared_ptr<std::vector<std::string>> lines) {
  node::options opt;
  log_options lo;
  lo.format = "json";
  opt.log = make_memory_log_backend(lo, std::move(lines));
  auto n = node::start(std::move(opt));
  REQUIRE(n);
  REQUIRE((*n)->listen("127.0.0.1:0"));
  return std::move(*n);
}

double metric(node& n, const std::string& series) {
  auto text = n.metrics().serialize_text();
  auto pos = text.find(series + " ");
  if (pos == std::string::npos) return 0;
  return std::stod(text.substr(pos + series.size() + 1));
}

/// The node's interface as a peer with its own "af.envelope" type sees it.
using fake_envelope_actor = caf::typed_actor<caf::replies_to<fake_envelope>::with<fake_envelope>>;

struct peer {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  explicit peer() {
    cfg.load<caf::io::middleman>();
    cfg.add_message_type<fake_envelope>("af.envelope");
    cfg.add_message_type<stranger>("test.stranger");
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

} // namespace

TEST_CASE("the control endpoint answers over TCP", "[wire]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = listening_node(lines);
  auto client = remote_node::connect("127.0.0.1:" + std::to_string(n->listen_port()));
  REQUIRE(client);
  auto s = (*client)->ask<v1::NodeStatus>(k_control_agent, v1::NodeStatusRequest{}, 5s);
  REQUIRE(s);
  REQUIRE(s->name() == "af-node");
  auto missing = (*client)->ask<v1::NodeStatus>("nobody", v1::NodeStatusRequest{}, 5s);
  REQUIRE_FALSE(missing);
  REQUIRE(missing.error().code() == errc::not_found);
  REQUIRE(missing.error().message() == "no agent named 'nobody' on node 'af-node'");
}

TEST_CASE("connecting to a closed port fails fast with a clear error", "[wire]") {
  auto client = remote_node::connect("127.0.0.1:1");
  REQUIRE_FALSE(client);
  REQUIRE(client.error().code() == errc::transient);
  REQUIRE(client.error().message().starts_with("cannot connect to node at 127.0.0.1:1"));
  REQUIRE(remote_node::connect("no-port").error().code() == errc::validation);
}

TEST_CASE("undecodable envelopes from a peer are counted, logged and do not hurt the node",
          "[wire]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = listening_node(lines);
  {
    peer p;
    auto ctl = p.sys->middleman().remote_actor<fake_envelope_actor>("127.0.0.1", n->listen_port());
    REQUIRE(ctl);
    caf::anon_send(*ctl, fake_envelope{"garbage \xff\xfe bytes"});
    for (int i = 0; i < 400 && metric(*n, "af_envelope_rejected_total{reason=\"malformed\"}") < 1;
         ++i)
      std::this_thread::sleep_for(10ms);
  }
  REQUIRE(metric(*n, "af_envelope_rejected_total{reason=\"malformed\"}") == 1);
  // The node still serves well-behaved clients.
  auto client = remote_node::connect("127.0.0.1:" + std::to_string(n->listen_port()));
  REQUIRE(client);
  REQUIRE((*client)->ask<v1::NodeStatus>(k_control_agent, v1::NodeStatusRequest{}, 5s));
  n->shutdown();
  bool logged = false;
  for (const auto& l : *lines)
    logged = logged
             || (l.find("\"event\":\"envelope_rejected\"") != std::string::npos
                 && l.find("truncated or malformed") != std::string::npos);
  REQUIRE(logged);
}

TEST_CASE("a message type the node does not know is answered with an error", "[wire]") {
  auto lines = std::make_shared<std::vector<std::string>>();
  auto n = listening_node(lines);
  peer p;
  auto ctl = p.sys->middleman().remote_actor<fake_envelope_actor>("127.0.0.1", n->listen_port());
  REQUIRE(ctl);
  caf::scoped_actor self{*p.sys};
  bool got_error = false;
  self->request(caf::actor_cast<caf::actor>(*ctl), std::chrono::seconds(5), stranger{7})
      .receive([&](const caf::message&) {}, [&](const caf::error&) { got_error = true; });
  REQUIRE(got_error);
}
