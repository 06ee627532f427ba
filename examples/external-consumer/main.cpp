// The smallest AgentFlow program: one agent, one node, one ask. Built against the installed
// package by tests/packaging; docs/agents.md starts from it.
#include <af/node.hpp>

#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <iostream>

using google::protobuf::StringValue;

/// Replies "hello, <name>"; an empty name is a validation error.
class greeter : public af::agent_base<greeter> {
public:
  static void define(af::handlers<greeter>& h) { h.kind("example.greeter").on(&greeter::greet); }

  af::expected<StringValue> greet(af::context& ctx, const StringValue& who) {
    if (who.value().empty()) return af::validation_error("greet: name must not be empty");
    ++greeted_;
    ctx.log().info("greeted", "said hello", {{"who", who.value()}, {"count", greeted_}});
    StringValue out;
    out.set_value("hello, " + who.value() + " (from " + ctx.name() + ")");
    return out;
  }

private:
  int greeted_ = 0;
};

int main() {
  auto node = af::node::start();
  if (!node) {
    std::cerr << "node: " << node.error().to_string() << '\n';
    return 1;
  }
  auto g = (*node)->spawn<greeter>("greeter");
  if (!g) {
    std::cerr << "spawn: " << g.error().to_string() << '\n';
    return 1;
  }

  StringValue who;
  who.set_value("agentflow");
  auto reply = (*node)->ask<StringValue>(*g, who, std::chrono::seconds(2));
  if (!reply) {
    std::cerr << "ask: " << reply.error().to_string() << '\n';
    return 1;
  }
  std::cout << "reply: " << reply->value() << '\n';

  auto bad = (*node)->ask<StringValue>(*g, StringValue{}, std::chrono::seconds(2));
  if (bad || bad.error().code() != af::errc::validation) {
    std::cerr << "expected a validation error for an empty name\n";
    return 1;
  }
  std::cout << "error: " << bad.error().to_string() << '\n';
  return 0;
}
