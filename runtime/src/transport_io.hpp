// Private: the cluster transport's socket layer: one I/O thread (Boost.Asio) that accepts and
// dials TCP connections (optionally mutual TLS), splits the byte stream into length-prefixed
// frames and reports them, in batches, to the transport actor through callbacks.
#pragma once

#include "af/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace af::detail {

/// Bytes of the length prefix before every frame on the wire (little-endian u32).
inline constexpr std::size_t k_frame_prefix = 4;

/// What the I/O thread reports. Callbacks run on the I/O thread and must not block: the
/// transport turns each into one message to its actor. For one connection, calls come in order.
struct io_events {
  /// An inbound connection is ready (TLS handshake done); `remote` is "host:port".
  std::function<void(std::uint64_t conn, std::string remote)> accepted;
  /// The dial `token` connected (and finished its TLS handshake) as connection `conn`.
  std::function<void(std::uint64_t token, std::uint64_t conn)> connected;
  std::function<void(std::uint64_t token, std::string why)> connect_failed;
  /// Every complete frame of one read, in order.
  std::function<void(std::uint64_t conn, std::vector<std::string> frames)> frames;
  /// The peer declared a frame over the limit: nothing more is read from `conn` (the bytes are
  /// not allocated); the transport refuses the peer and closes the connection.
  std::function<void(std::uint64_t conn, std::size_t declared)> oversized;
  /// The connection is gone (peer closed, reset, error, or closed here); always the last call.
  std::function<void(std::uint64_t conn, std::string why)> closed;
  /// An inbound connection failed its TLS handshake (untrusted, anonymous or plaintext peer).
  std::function<void(std::string remote, std::string why)> tls_refused;
};

struct io_options {
  std::string host;
  std::uint16_t port = 0;
  std::size_t max_frame_bytes = 16u << 20;
  std::chrono::milliseconds connect_timeout{5000};
  bool tls = false;
  std::string tls_cert, tls_key, tls_ca;
};

/// The socket layer. `start` binds and listens at once (errors are returned), then runs the
/// I/O thread until `stop` (or destruction) closes every connection and joins it.
class transport_io {
public:
  [[nodiscard]] static expected<std::unique_ptr<transport_io>> start(io_options opts,
                                                                     io_events events);
  ~transport_io();
  transport_io(const transport_io&) = delete;
  transport_io& operator=(const transport_io&) = delete;

  /// The port it listens on.
  [[nodiscard]] std::uint16_t port() const noexcept;
  /// Dials host:port; `connected` or `connect_failed` answers with `token`.
  void connect(std::uint64_t token, const std::string& host, std::uint16_t port);
  /// Sends one frame (prefixed with its length). On an idle plaintext connection the bytes go
  /// straight to the socket from the calling thread; otherwise the I/O thread writes them.
  void send(std::uint64_t conn, std::string_view frame);
  /// Closes `conn` once what was sent before is written.
  void close(std::uint64_t conn);
  /// Writes what is queued (briefly), closes everything and joins the I/O thread. Idempotent;
  /// no callback runs after it returns.
  void stop();

  struct impl;

private:
  explicit transport_io(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace af::detail
