// The cluster transport's socket layer (see transport_io.hpp): Boost.Asio on one I/O thread,
// TCP with TCP_NODELAY, optional mutual TLS through asio::ssl (TLS 1.2 minimum, peer
// certificate required and verified against the cluster CA), frames prefixed with their length.
// This is I/O code: it owns a thread and real timers (exempt from the determinism lint).
#include "transport_io.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>

#include <openssl/ssl.h>

#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace af::detail {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

/// Read buffer per connection; a larger frame grows it for as long as it takes to read it.
constexpr std::size_t k_read_buffer = 64 * 1024;
/// A buffer grown for large frames is kept up to this size (batch frames are sent at 256 KiB, so
/// a burst reads into the same buffer instead of growing and shrinking it for every frame); one
/// grown beyond it for a rare larger frame shrinks back to k_read_buffer.
constexpr std::size_t k_keep_read_buffer = 1024 * 1024;
/// How long a connection closed here waits for the peer's end before it is cut.
constexpr auto k_linger = std::chrono::seconds(2);
/// How long `stop` lets queued frames (goodbyes) drain.
constexpr auto k_stop_drain = std::chrono::milliseconds(300);

// Little-endian, like the integers inside frames (transport_frame.cpp).
void put_length(char* out, std::uint32_t n) {
  for (std::size_t i = 0; i < k_frame_prefix; ++i)
    out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
}

std::uint32_t get_length(const char* in) {
  std::uint32_t n = 0;
  for (std::size_t i = 0; i < k_frame_prefix; ++i)
    n |= std::uint32_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return n;
}

struct conn {
  conn(asio::io_context& io, asio::ssl::context* ssl) : plain(io), timer(io) {
    if (ssl != nullptr) tls.emplace(io, *ssl);
  }
  tcp::socket& sock() { return tls ? tls->next_layer() : plain; }

  tcp::socket plain;
  std::optional<asio::ssl::stream<tcp::socket>> tls;
  asio::steady_timer timer;
  std::uint64_t id = 0; ///< 0 until the connection is ready (handshake done)
  std::string remote;
  int fd = -1;

  // Writing: shared between the sending thread and the I/O thread.
  std::mutex mtx;
  std::string out;      ///< bytes queued, not yet handed to asio
  bool writing = false; ///< the I/O thread owns the socket's write side
  bool close_after = false;
  bool closed = false;

  // Reading: I/O thread only.
  std::vector<char> in = std::vector<char>(k_read_buffer);
  std::size_t in_len = 0;
  bool discard = false; ///< closing, or the peer declared an oversized frame
  std::string wbuf;     ///< the bytes of the write in flight
  bool timed_out = false;
};

using conn_ptr = std::shared_ptr<conn>;

std::string endpoint_text(const tcp::socket& s) {
  error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

} // namespace

struct transport_io::impl {
  io_options opts;
  io_events ev;
  std::optional<asio::ssl::context> ssl;
  asio::io_context ctx{1};
  tcp::acceptor acceptor{ctx};
  asio::steady_timer accept_retry{ctx};
  std::uint16_t port = 0;
  std::mutex map_mtx;
  std::condition_variable map_cv;
  std::unordered_map<std::uint64_t, conn_ptr> conns;
  std::uint64_t next_id = 0; ///< I/O thread only
  std::thread thread;
  std::atomic<bool> stopping{false};
  bool stopped = false;

  conn_ptr make_conn() { return std::make_shared<conn>(ctx, ssl ? &*ssl : nullptr); }

  conn_ptr find(std::uint64_t id) {
    std::lock_guard g{map_mtx};
    auto it = conns.find(id);
    return it == conns.end() ? nullptr : it->second;
  }

  void setup(const conn_ptr& c) {
    error_code ec;
    c->sock().set_option(tcp::no_delay(true), ec);
    c->fd = c->sock().native_handle();
    c->remote = endpoint_text(c->sock());
  }

  void enroll(const conn_ptr& c) {
    c->id = ++next_id;
    std::lock_guard g{map_mtx};
    conns[c->id] = c;
  }

  void arm_timeout(const conn_ptr& c, std::chrono::milliseconds after) {
    c->timer.expires_after(after);
    c->timer.async_wait([c](const error_code& ec) {
      if (ec) return; // cancelled
      c->timed_out = true;
      error_code ig;
      c->sock().close(ig);
    });
  }

  // --- accepting --------------------------------------------------------------------------------

  void do_accept() {
    auto c = make_conn();
    acceptor.async_accept(c->sock(), [this, c](const error_code& ec) {
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
        // Out of descriptors or memory: accepting again at once would spin; wait a little.
        accept_retry.expires_after(std::chrono::milliseconds(100));
        accept_retry.async_wait([this](const error_code& e) {
          if (!e && acceptor.is_open()) do_accept();
        });
        return;
      }
      setup(c);
      if (c->tls) {
        arm_timeout(c, opts.connect_timeout);
        c->tls->async_handshake(asio::ssl::stream_base::server, [this, c](const error_code& ec) {
          c->timer.cancel();
          if (ec) {
            ev.tls_refused(c->remote, c->timed_out ? "TLS handshake timed out" : ec.message());
            error_code ig;
            c->sock().close(ig);
            return;
          }
          ready_inbound(c);
        });
      } else {
        ready_inbound(c);
      }
      do_accept();
    });
  }

  void ready_inbound(const conn_ptr& c) {
    if (stopping) return;
    enroll(c);
    ev.accepted(c->id, c->remote);
    start_read(c);
  }

  // --- dialling ---------------------------------------------------------------------------------

  void do_connect(std::uint64_t token, const std::string& host, std::uint16_t p) {
    auto c = make_conn();
    auto resolver = std::make_shared<tcp::resolver>(ctx);
    arm_timeout(c, opts.connect_timeout);
    auto fail = [this, token, c](const error_code& ec) {
      c->timer.cancel();
      error_code ig;
      c->sock().close(ig);
      ev.connect_failed(token, c->timed_out ? "timed out" : ec.message());
    };
    resolver->async_resolve(
        host, std::to_string(p),
        [this, token, c, resolver, fail](const error_code& ec, tcp::resolver::results_type res) {
          if (ec) {
            fail(ec);
            return;
          }
          asio::async_connect(
              c->sock(), res, [this, token, c, fail](const error_code& ec, const tcp::endpoint&) {
                if (ec) {
                  fail(ec);
                  return;
                }
                setup(c);
                if (!c->tls) {
                  c->timer.cancel();
                  ready_outbound(token, c);
                  return;
                }
                c->tls->async_handshake(asio::ssl::stream_base::client,
                                        [this, token, c, fail](const error_code& ec) {
                                          if (ec) {
                                            fail(ec);
                                            return;
                                          }
                                          c->timer.cancel();
                                          ready_outbound(token, c);
                                        });
              });
        });
  }

  void ready_outbound(std::uint64_t token, const conn_ptr& c) {
    if (stopping) return;
    enroll(c);
    ev.connected(token, c->id);
    start_read(c);
  }

  // --- reading ----------------------------------------------------------------------------------

  void start_read(const conn_ptr& c) {
    auto buf = asio::buffer(c->in.data() + c->in_len, c->in.size() - c->in_len);
    auto h = [this, c](const error_code& ec, std::size_t n) { on_read(c, ec, n); };
    if (c->tls)
      c->tls->async_read_some(buf, std::move(h));
    else
      c->sock().async_read_some(buf, std::move(h));
  }

  void on_read(const conn_ptr& c, const error_code& ec, std::size_t n) {
    if (ec) {
      finish(c, ec == asio::error::eof ? "closed by the peer" : ec.message());
      return;
    }
    if (c->discard) {
      c->in_len = 0;
      start_read(c);
      return;
    }
    c->in_len += n;
    std::vector<std::string> frames;
    std::size_t at = 0;
    std::size_t need = 0;
    while (c->in_len - at >= k_frame_prefix) {
      const std::size_t len = get_length(c->in.data() + at);
      if (len > opts.max_frame_bytes) {
        // Checked before anything is allocated for it: the rest of the stream is ignored.
        c->discard = true;
        c->in_len = 0;
        if (!frames.empty()) ev.frames(c->id, std::move(frames));
        ev.oversized(c->id, len);
        start_read(c);
        return;
      }
      if (c->in_len - at - k_frame_prefix < len) {
        need = k_frame_prefix + len;
        break;
      }
      frames.emplace_back(c->in.data() + at + k_frame_prefix, len);
      at += k_frame_prefix + len;
    }
    if (at > 0) {
      std::memmove(c->in.data(), c->in.data() + at, c->in_len - at);
      c->in_len -= at;
    }
    if (need > c->in.size()) {
      c->in.resize(need);
    } else if (c->in.size() > k_keep_read_buffer && c->in_len <= k_read_buffer && need == 0) {
      c->in.resize(k_read_buffer);
      c->in.shrink_to_fit();
    }
    if (!frames.empty()) ev.frames(c->id, std::move(frames));
    start_read(c);
  }

  // --- writing ----------------------------------------------------------------------------------

  void send(std::uint64_t id, std::string_view frame) {
    auto c = find(id);
    if (!c) return;
    char hdr[k_frame_prefix];
    put_length(hdr, static_cast<std::uint32_t>(frame.size()));
    std::unique_lock g{c->mtx};
    if (c->closed || c->close_after) return;
    if (!c->tls && !c->writing && c->out.empty()) {
      // The socket is idle: write from this thread, no hand-off to the I/O thread.
      iovec iov[2] = {{hdr, k_frame_prefix}, {const_cast<char*>(frame.data()), frame.size()}};
      msghdr m{};
      m.msg_iov = iov;
      m.msg_iovlen = 2;
      auto n = ::sendmsg(c->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
      const auto total = static_cast<ssize_t>(k_frame_prefix + frame.size());
      if (n == total) return;
      if (n < 0) n = 0; // would block, or an error the I/O thread's write reports
      const auto sent = static_cast<std::size_t>(n);
      if (sent < k_frame_prefix) {
        c->out.append(hdr + sent, k_frame_prefix - sent);
        c->out.append(frame);
      } else {
        c->out.append(frame.substr(sent - k_frame_prefix));
      }
    } else {
      c->out.append(hdr, k_frame_prefix);
      c->out.append(frame);
    }
    if (!c->writing) {
      c->writing = true;
      g.unlock();
      asio::post(ctx, [this, c] { write_more(c); });
    }
  }

  void write_more(const conn_ptr& c) {
    {
      std::lock_guard g{c->mtx};
      if (c->closed) {
        c->writing = false;
        return;
      }
      if (c->out.empty()) {
        c->writing = false;
        if (!c->close_after) return;
      } else {
        c->wbuf.clear();
        c->wbuf.swap(c->out);
      }
    }
    if (c->wbuf.empty()) {
      begin_close(c);
      return;
    }
    auto h = [this, c](const error_code& ec, std::size_t) {
      c->wbuf.clear();
      if (ec) {
        {
          std::lock_guard g{c->mtx};
          c->writing = false;
        }
        finish(c, ec.message());
        return;
      }
      write_more(c);
    };
    if (c->tls)
      asio::async_write(*c->tls, asio::buffer(c->wbuf), std::move(h));
    else
      asio::async_write(c->sock(), asio::buffer(c->wbuf), std::move(h));
  }

  void close(std::uint64_t id) {
    auto c = find(id);
    if (!c) return;
    std::unique_lock g{c->mtx};
    if (c->closed || c->close_after) return;
    c->close_after = true;
    if (!c->writing) {
      c->writing = true;
      g.unlock();
      asio::post(ctx, [this, c] { write_more(c); });
    }
  }

  /// Everything is written: send FIN, ignore what still comes, and close when the peer has
  /// closed too (its last bytes would otherwise turn our close into a reset) or after a while.
  void begin_close(const conn_ptr& c) {
    if (stopping) {
      finish(c, "closed here");
      return;
    }
    c->discard = true;
    error_code ig;
    c->sock().shutdown(tcp::socket::shutdown_send, ig);
    c->timer.expires_after(k_linger);
    c->timer.async_wait([this, c](const error_code& ec) {
      if (!ec) finish(c, "closed here");
    });
  }

  void finish(const conn_ptr& c, const std::string& why) {
    {
      std::lock_guard g{c->mtx};
      if (c->closed) return;
      c->closed = true;
      c->out.clear();
    }
    c->timer.cancel();
    error_code ig;
    c->sock().shutdown(tcp::socket::shutdown_both, ig);
    c->sock().close(ig);
    if (c->id == 0) return;
    {
      std::lock_guard g{map_mtx};
      conns.erase(c->id);
    }
    map_cv.notify_all();
    ev.closed(c->id, why);
  }

  void stop() {
    if (stopped) return;
    stopped = true;
    stopping = true;
    asio::post(ctx, [this] {
      error_code ig;
      acceptor.close(ig);
      accept_retry.cancel();
      std::vector<conn_ptr> all;
      {
        std::lock_guard g{map_mtx};
        for (auto& [id, c] : conns)
          all.push_back(c);
      }
      for (auto& c : all) {
        std::unique_lock g{c->mtx};
        c->close_after = true;
        if (c->writing) continue; // the write in flight finishes, then closes
        g.unlock();
        finish(c, "the transport stopped");
      }
    });
    {
      std::unique_lock g{map_mtx};
      map_cv.wait_for(g, k_stop_drain, [this] { return conns.empty(); });
    }
    ctx.stop();
    if (thread.joinable()) thread.join();
    std::lock_guard g{map_mtx};
    for (auto& [id, c] : conns) {
      std::lock_guard cg{c->mtx};
      c->closed = true;
      error_code ig;
      c->sock().close(ig);
    }
    conns.clear();
  }
};

expected<std::unique_ptr<transport_io>> transport_io::start(io_options opts, io_events events) {
  auto p = std::make_unique<impl>();
  p->opts = std::move(opts);
  p->ev = std::move(events);
  error_code ec;
  if (p->opts.tls) {
    p->ssl.emplace(asio::ssl::context::tls);
    auto& s = *p->ssl;
    s.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2
                  | asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1
                  | asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
    SSL_CTX_set_min_proto_version(s.native_handle(), TLS1_2_VERSION);
    // No anonymous or unauthenticated suites: the peer proves itself with a certificate.
    SSL_CTX_set_cipher_list(s.native_handle(), "HIGH:!aNULL:!eNULL:!PSK:!SRP:!MD5:!RC4");
    auto tls_error = [&](const std::string& what, const std::string& file) {
      return error{errc::validation,
                   "cluster TLS: cannot load " + what + " '" + file + "': " + ec.message()};
    };
    if (s.use_certificate_chain_file(p->opts.tls_cert, ec); ec)
      return tls_error("certificate", p->opts.tls_cert);
    if (s.use_private_key_file(p->opts.tls_key, asio::ssl::context::pem, ec); ec)
      return tls_error("key", p->opts.tls_key);
    if (s.load_verify_file(p->opts.tls_ca, ec); ec) return tls_error("CA", p->opts.tls_ca);
    s.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  tcp::endpoint ep;
  auto addr = asio::ip::make_address(p->opts.host, ec);
  if (!ec) {
    ep = tcp::endpoint{addr, p->opts.port};
  } else {
    tcp::resolver r{p->ctx};
    auto res = r.resolve(p->opts.host, std::to_string(p->opts.port), ec);
    if (ec || res.empty())
      return error{errc::transient, "cannot resolve '" + p->opts.host + "': " + ec.message()};
    ep = res.begin()->endpoint();
  }
  p->acceptor.open(ep.protocol(), ec);
  if (!ec) p->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) p->acceptor.bind(ep, ec);
  if (!ec) p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return error{errc::transient, ec.message()};
  p->port = p->acceptor.local_endpoint().port();
  p->do_accept();
  auto* raw = p.get();
  p->thread = std::thread([raw] { raw->ctx.run(); });
  return std::unique_ptr<transport_io>(new transport_io(std::move(p)));
}

transport_io::transport_io(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

transport_io::~transport_io() { stop(); }

std::uint16_t transport_io::port() const noexcept { return impl_->port; }

void transport_io::connect(std::uint64_t token, const std::string& host, std::uint16_t port) {
  asio::post(impl_->ctx,
             [p = impl_.get(), token, host, port] { p->do_connect(token, host, port); });
}

void transport_io::send(std::uint64_t conn, std::string_view frame) { impl_->send(conn, frame); }

void transport_io::close(std::uint64_t conn) { impl_->close(conn); }

void transport_io::stop() {
  if (impl_) impl_->stop();
}

} // namespace af::detail
