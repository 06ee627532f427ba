// af::remote_node: a client for a running node's control endpoint (`af node status`,
// `af demo --connect`): connects with CAF's middleman and asks the node's agents by name.
#pragma once

#include "af/agent.hpp"
#include "af/error.hpp"

#include <memory>
#include <string>

namespace af {

class remote_node {
public:
  /// Connects to the control endpoint at "host:port".
  [[nodiscard]] static expected<std::unique_ptr<remote_node>> connect(const std::string& host_port);
  ~remote_node();
  remote_node(const remote_node&) = delete;
  remote_node& operator=(const remote_node&) = delete;

  /// Asks the agent `agent_name` on the remote node (the control agent itself when it is
  /// "af.control"). Blocks the calling thread until the reply or the timeout.
  template <class Reply, class Msg>
  expected<Reply> ask(std::string_view agent_name, Msg msg, duration timeout) {
    return detail::unpack_reply<Reply>(
        ask_erased(agent_name, std::make_shared<const Msg>(std::move(msg)), timeout));
  }
  expected<envelope> ask_erased(std::string_view agent_name,
                                std::shared_ptr<const google::protobuf::Message> msg,
                                duration timeout);

  struct impl;

private:
  explicit remote_node(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace af
