// Private: the node's cluster transport (af.cluster.transport): its options, read from the
// configuration, and the supervised child that runs it. See transport.cpp for the protocol.
#pragma once

#include "af/config.hpp"
#include "af/error.hpp"
#include "af/host_port.hpp"
#include "af/sup/spec.hpp"

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace af::detail {

struct node_core;

struct transport_options {
  host_port listen;
  std::string advertise; ///< "host:port" peers are told to reach this node at
  std::string secret;
  bool tls = false; ///< mutual TLS with the three files below
  std::string tls_cert, tls_key, tls_ca;
  std::size_t max_frame_bytes = 16u << 20;
  double peer_rate = 0; ///< inbound envelopes per second per peer; 0: unlimited
  std::size_t queue_limit = 10000;
  duration reconnect_base = std::chrono::milliseconds(100);
  duration reconnect_cap = std::chrono::seconds(5);
  duration handshake_timeout = std::chrono::seconds(5);
};

/// The cluster.* keys, checked: the secret file is read (mandatory), the TLS files loaded.
/// Nullopt when cluster.listen is not set (no transport).
[[nodiscard]] expected<std::optional<transport_options>> transport_options_from(const config& cfg);

/// Where the transport reports the port it listens on (the first start waits for it; a restart
/// listens on the same port again).
struct transport_status {
  std::mutex mtx;
  std::condition_variable cv;
  std::optional<error> failed;
  std::uint16_t port = 0;
  bool published = false;
};

/// The transport as a child of af.sup.system: registers itself as af.cluster.transport and
/// listens on `opts.listen` (mutual TLS through asio::ssl when `opts.tls`).
[[nodiscard]] sup::child_spec transport_child(node_core& core, transport_options opts,
                                              std::shared_ptr<transport_status> status);

} // namespace af::detail
