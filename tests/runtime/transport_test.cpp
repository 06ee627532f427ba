// The cluster transport between real nodes in one process (each its own actor system, on
// 127.0.0.1 ephemeral ports): asks and tells by address, fast failure for unreachable nodes,
// reconnect after a restart, the HMAC handshake refusing a wrong secret and unauthenticated
// frames (sent by a raw TCP client), frame limits and garbage, and mutual TLS (untrusted and
// anonymous peers refused, and no plaintext on the wire, checked through a recording relay).
#include "af/node.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/transport.pb.h"
#include "caf_glue.hpp"
#include "node_core.hpp"
#include "support/temp_dir.hpp"
#include "transport.hpp"
#include "transport_auth.hpp"
#include "transport_frame.hpp"

#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <google/protobuf/empty.pb.h>
#include <google/protobuf/wrappers.pb.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

using namespace af;
using namespace std::chrono_literals;
using google::protobuf::Int64Value;
using google::protobuf::StringValue;

namespace {

using clock_type = std::chrono::steady_clock;

class greeter : public agent_base<greeter> {
public:
  static void define(handlers<greeter>& h) { h.kind("test.greeter").on(&greeter::greet); }
  expected<StringValue> greet(context& ctx, const StringValue& who) {
    StringValue out;
    out.set_value("hello, " + who.value() + " from " + ctx.self().node);
    return out;
  }
};

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

/// Records whether tells arrived in order (values 1, 2, 3, ...) and how many; an ask reads both.
class sequence_checker : public agent_base<sequence_checker> {
public:
  static void define(handlers<sequence_checker>& h) {
    h.kind("test.sequence").on(&sequence_checker::add).on(&sequence_checker::get);
  }
  void add(context&, const Int64Value& v) {
    if (v.value() != seen_ + 1) ordered_ = false;
    seen_ = v.value();
    ++count_;
  }
  expected<StringValue> get(context&, const StringValue&) {
    StringValue out;
    out.set_value(std::to_string(count_) + (ordered_ ? " ordered" : " out of order"));
    return out;
  }

private:
  std::int64_t seen_ = 0, count_ = 0;
  bool ordered_ = true;
};

/// Counts the tells it handles and stops itself at the one whose value is 5.
class stopper : public agent_base<stopper> {
public:
  static void define(handlers<stopper>& h) { h.kind("test.stopper").on(&stopper::add); }
  explicit stopper(std::atomic<int>* handled) : handled_(handled) {}
  void add(context& ctx, const Int64Value& v) {
    handled_->fetch_add(1);
    if (v.value() == 5) ctx.stop();
  }

private:
  std::atomic<int>* handled_;
};

/// Asks the greeter on the node named in the message (an agent-to-agent ask by address).
class caller : public agent_base<caller> {
public:
  static void define(handlers<caller>& h) { h.kind("test.caller").on(&caller::call); }
  void call(context& ctx, const StringValue& node, responder<StringValue> rp) {
    auto ref = ctx.lookup(address{node.value(), "greeter"});
    if (!ref) {
      rp.fail(ref.error());
      return;
    }
    StringValue who;
    who.set_value(ctx.self().node);
    ctx.ask<StringValue>(*ref, who, 3s, [rp](expected<StringValue> r) mutable {
      if (r)
        rp.reply(*r);
      else
        rp.fail(r.error());
    });
  }
};

struct log_lines {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  [[nodiscard]] std::size_t count(const std::string& a, const std::string& b = {}) const {
    std::size_t n = 0;
    for (const auto& l : *lines)
      if (l.find(a) != std::string::npos && (b.empty() || l.find(b) != std::string::npos)) ++n;
    return n;
  }
};

using flags = std::vector<std::pair<std::string, std::string>>;

expected<std::unique_ptr<node>> start_node(const std::string& name, const std::string& listen,
                                           const std::string& secret_file, const flags& extra,
                                           const log_lines& log) {
  config_sources src;
  src.flags.push_back({"node.name", name, "test"});
  src.flags.push_back({"cluster.listen", listen, "test"});
  src.flags.push_back({"cluster.secret_file", secret_file, "test"});
  src.flags.push_back({"cluster.reconnect_base_ms", "50", "test"});
  src.flags.push_back({"cluster.reconnect_cap_ms", "400", "test"});
  src.flags.push_back({"cluster.handshake_timeout_ms", "2000", "test"});
  for (const auto& [k, v] : extra)
    src.flags.push_back({k, v, "test"});
  auto cfg = config::load(src);
  if (!cfg) return cfg.error();
  node::options opt;
  opt.cfg = std::move(*cfg);
  log_options lo;
  lo.level = log_level::debug;
  lo.format = "json";
  lo.node = name;
  opt.log = make_memory_log_backend(lo, log.lines);
  return node::start(std::move(opt));
}

std::unique_ptr<node> must_start(const std::string& name, const std::string& listen,
                                 const std::string& secret_file, const log_lines& log,
                                 const flags& extra = {}) {
  auto n = start_node(name, listen, secret_file, extra, log);
  if (!n) FAIL("node " << name << " did not start: " << n.error().to_string());
  return std::move(*n);
}

/// Tells `n`'s transport where `peer` listens (what membership does on real nodes).
void add_route(node& n, const std::string& peer, const std::string& endpoint) {
  v1::PeerRoutes pr;
  auto* m = pr.add_members();
  m->set_node(peer);
  m->set_endpoint(endpoint);
  m->set_state(v1::MEMBER_ALIVE);
  auto r = n.ask<google::protobuf::Empty>(std::string{k_cluster_transport}, pr, 5s);
  REQUIRE(r.has_value());
}

expected<StringValue> greet_remote(node& from, const std::string& node_name,
                                   const std::string& who = "edge", duration timeout = 5s) {
  auto ref = from.core().lookup(address{node_name, "greeter"});
  if (!ref) return ref.error();
  StringValue m;
  m.set_value(who);
  return from.ask<StringValue>(*ref, m, timeout);
}

double metric(node& n, const std::string& series) {
  const auto text = n.metrics().serialize_text();
  std::size_t at = 0;
  double total = 0;
  while ((at = text.find('\n' + series, at)) != std::string::npos) {
    auto line_end = text.find('\n', at + 1);
    auto line = text.substr(at + 1, line_end - at - 1);
    auto sp = line.rfind(' ');
    total += std::stod(line.substr(sp + 1));
    at = line_end;
  }
  return total;
}

std::string endpoint_of(node& n) { return "127.0.0.1:" + std::to_string(n.cluster_port()); }

/// The address 127.0.0.1:`port` (0: any free port, for bind).
sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

/// A TCP connection to 127.0.0.1:`port` whose reads give up after `timeout_s` seconds.
int dial_loopback(std::uint16_t port, int timeout_s) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  auto a = loopback(port);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

/// A TCP relay on 127.0.0.1 that records every byte it forwards (both directions).
class recording_relay {
public:
  explicit recording_relay(std::uint16_t target) : target_(target) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    auto a = loopback(0);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    REQUIRE(::listen(listen_fd_, 8) == 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~recording_relay() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    acceptor_.join();
    {
      std::lock_guard g{mtx_};
      for (int fd : fds_)
        ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : pumps_)
      t.join();
    for (int fd : fds_)
      ::close(fd);
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string captured() const {
    std::lock_guard g{mtx_};
    return bytes_;
  }

private:
  void accept_loop() {
    while (!stop_) {
      int c = ::accept(listen_fd_, nullptr, nullptr);
      if (c < 0) return;
      int u = ::socket(AF_INET, SOCK_STREAM, 0);
      auto a = loopback(target_);
      if (::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(c);
        ::close(u);
        continue;
      }
      std::lock_guard g{mtx_};
      fds_.push_back(c);
      fds_.push_back(u);
      pumps_.emplace_back([this, c, u] { pump(c, u); });
      pumps_.emplace_back([this, c, u] { pump(u, c); });
    }
  }
  void pump(int from, int to) {
    char buf[16384];
    for (;;) {
      auto n = ::read(from, buf, sizeof(buf));
      if (n <= 0) break;
      {
        std::lock_guard g{mtx_};
        bytes_.append(buf, static_cast<std::size_t>(n));
      }
      if (::write(to, buf, static_cast<std::size_t>(n)) != n) break;
    }
    ::shutdown(to, SHUT_WR);
  }

  std::uint16_t target_;
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;
  std::vector<int> fds_;
  mutable std::mutex mtx_;
  std::string bytes_;
};

/// Writes raw bytes to a TCP port on 127.0.0.1, reads whatever comes back until the peer closes
/// or 2 s pass; true when the peer closed the connection.
bool send_raw(std::uint16_t port, const std::string& bytes) {
  int fd = dial_loopback(port, 2);
  (void)::write(fd, bytes.data(), bytes.size());
  char buf[4096];
  bool closed = false;
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n == 0) {
      closed = true;
      break;
    }
    if (n < 0) break;
  }
  ::close(fd);
  return closed;
}

/// A raw TCP client of a node's transport: writes length-prefixed frames and reads them back,
/// without the transport's handshake unless the test performs it by hand.
class raw_peer {
public:
  explicit raw_peer(std::uint16_t port) {
    fd_ = dial_loopback(port, 5);
  }
  ~raw_peer() { ::close(fd_); }
  raw_peer(const raw_peer&) = delete;
  raw_peer& operator=(const raw_peer&) = delete;

  /// Sends `frame` behind a length prefix that declares `declared` bytes (default: its size).
  void send_frame(const std::string& frame, std::optional<std::uint32_t> declared = {}) {
    const std::uint32_t n = declared.value_or(static_cast<std::uint32_t>(frame.size()));
    std::string w;
    for (int i = 0; i < 4; ++i)
      w.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    w += frame;
    (void)::send(fd_, w.data(), w.size(), MSG_NOSIGNAL);
  }
  /// The next frame; empty when the connection closed or nothing came for 5 s.
  std::string next_frame() {
    unsigned char hdr[4];
    if (!read_exact(reinterpret_cast<char*>(hdr), 4)) return {};
    const std::uint32_t n = hdr[0] | (hdr[1] << 8) | (hdr[2] << 16) | (std::uint32_t{hdr[3]} << 24);
    std::string f(n, '\0');
    if (n > 0 && !read_exact(f.data(), n)) return {};
    return f;
  }
  /// True when the node closes the connection within 5 s (what it still sends is skipped).
  bool closed_by_node() {
    char buf[4096];
    for (;;) {
      auto n = ::read(fd_, buf, sizeof(buf));
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

private:
  bool read_exact(char* out, std::size_t n) {
    while (n > 0) {
      auto r = ::read(fd_, out, n);
      if (r <= 0) return false;
      out += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  }
  int fd_ = -1;
};

template <class F>
bool eventually(F&& f, duration limit = 10s) {
  const auto end = clock_type::now() + limit;
  while (clock_type::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return f();
}

std::string secret_file(const test::temp_dir& d, const std::string& name,
                        const std::string& secret) {
  return d.write(name, secret + "\n");
}

} // namespace

TEST_CASE("transport: the secret is mandatory, checked, and TLS files come all three or none",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  log_lines log;
  auto none = start_node("n1", "127.0.0.1:0", "", {}, log);
  REQUIRE_FALSE(none.has_value());
  CHECK(none.error().message().find("cluster.secret_file") != std::string::npos);
  auto missing = start_node("n1", "127.0.0.1:0", (d.path() / "nope").string(), {}, log);
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message().find("cannot read") != std::string::npos);
  auto empty = start_node("n1", "127.0.0.1:0", d.write("empty", "\n"), {}, log);
  REQUIRE_FALSE(empty.has_value());
  CHECK(empty.error().message().find("is empty") != std::string::npos);
  auto partial = start_node("n1", "127.0.0.1:0", secret_file(d, "s", "0123456789abcdef-secret"),
                            {{"cluster.tls_cert", d.write("c.pem", "x")}}, log);
  REQUIRE_FALSE(partial.has_value());
  CHECK(partial.error().message().find("all three") != std::string::npos);
  // A port in use: the node does not start, and says where.
  const auto secret = secret_file(d, "s2", "0123456789abcdef-secret");
  auto first = must_start("n1", "127.0.0.1:0", secret, log);
  auto taken = start_node("n2", endpoint_of(*first), secret, {}, log);
  REQUIRE_FALSE(taken.has_value());
  INFO(taken.error().to_string());
  CHECK(taken.error().message().find("cannot listen on " + endpoint_of(*first))
        != std::string::npos);
}

TEST_CASE("transport: handshake proofs bind role, names and nonces", "[transport]") {
  const std::string s = "0123456789abcdef-secret";
  auto p = detail::handshake_proof(s, detail::proof_role::client, "a", "b", "n1", "n2");
  CHECK(detail::proofs_equal(
      p, detail::handshake_proof(s, detail::proof_role::client, "a", "b", "n1", "n2")));
  CHECK_FALSE(detail::proofs_equal(
      p, detail::handshake_proof(s, detail::proof_role::server, "a", "b", "n1", "n2")));
  CHECK_FALSE(detail::proofs_equal(
      p, detail::handshake_proof(s, detail::proof_role::client, "b", "a", "n1", "n2")));
  CHECK_FALSE(detail::proofs_equal(
      p, detail::handshake_proof(s, detail::proof_role::client, "a", "b", "n1", "n3")));
  CHECK_FALSE(detail::proofs_equal(p, detail::handshake_proof("another-secret-xyz",
                                                              detail::proof_role::client, "a", "b",
                                                              "n1", "n2")));
  auto n1 = detail::make_nonce();
  auto n2 = detail::make_nonce();
  REQUIRE(n1.has_value());
  REQUIRE(n2.has_value());
  CHECK(n1->size() == detail::k_nonce_bytes);
  CHECK(*n1 != *n2);
}

TEST_CASE("transport: the frame MAC is HMAC-SHA256 of direction and sequence and body",
          "[transport]") {
  // The wire contract (docs/cluster.md): HMAC-SHA256 under the session key of the direction
  // byte, the little-endian sequence number and the body. Checked against OpenSSL's one-shot
  // HMAC over the concatenation, for an empty, a small and a large (multi-block) body.
  const std::string key = "session-key-0123456789abcdef0123";
  for (std::size_t size : {std::size_t{0}, std::size_t{37}, std::size_t{300000}}) {
    std::string body(size, '\0');
    for (std::size_t i = 0; i < size; ++i)
      body[i] = static_cast<char>((i * 131 + 7) & 0xff);
    const std::uint64_t seq = 0x0102030405060708ull + size;
    std::string msg{'c'};
    for (int i = 0; i < 8; ++i)
      msg.push_back(static_cast<char>((seq >> (8 * i)) & 0xff));
    msg += body;
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    REQUIRE(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                 reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len)
            != nullptr);
    const std::string expected(reinterpret_cast<const char*>(out), len);
    const auto mac = detail::frame_mac(key, 'c', seq, body);
    CHECK(mac.size() == 32);
    CHECK(mac == expected);
    CHECK(mac != detail::frame_mac(key, 's', seq, body));
    CHECK(mac != detail::frame_mac(key, 'c', seq + 1, body));
    CHECK(mac != detail::frame_mac("another-session-key-0123456789ab", 'c', seq, body));
    if (size > 0) {
      body[size / 2] = static_cast<char>(body[size / 2] ^ 1);
      CHECK(mac != detail::frame_mac(key, 'c', seq, body));
    }
  }
}

TEST_CASE("transport: batch frames parse back and garbage is refused", "[transport]") {
  std::string f;
  detail::begin_frame(f, detail::frame_type::batch);
  detail::append_item(f, detail::item_kind::tell, 0, "abc");
  detail::append_item(f, detail::item_kind::ask, 7, "");
  auto items = detail::parse_batch(std::string_view{f}.substr(1));
  REQUIRE(items.has_value());
  REQUIRE(items->size() == 2);
  CHECK((*items)[0].body == "abc");
  CHECK((*items)[1].ask_id == 7);
  CHECK_FALSE(detail::parse_batch(std::string_view{f}.substr(1, f.size() - 3)).has_value());
  CHECK_FALSE(detail::parse_batch("\x09garbage-garbage-garbage").has_value());
  CHECK_FALSE(detail::parse_batch("").has_value());
}

TEST_CASE("transport: a reused item list holds only the last frame's items", "[transport]") {
  std::string a;
  detail::begin_frame(a, detail::frame_type::batch);
  for (int i = 0; i < 64; ++i)
    detail::append_item(a, detail::item_kind::tell, 0, "item-" + std::to_string(i));
  std::string b;
  detail::begin_frame(b, detail::frame_type::batch);
  detail::append_item(b, detail::item_kind::reply, 9, "r");
  std::vector<detail::batch_item> items;
  REQUIRE(detail::parse_batch(std::string_view{a}.substr(1), items).has_value());
  REQUIRE(items.size() == 64);
  CHECK(items[63].body == "item-63");
  const auto capacity = items.capacity();
  REQUIRE(detail::parse_batch(std::string_view{b}.substr(1), items).has_value());
  REQUIRE(items.size() == 1); // cleared first, not appended to
  CHECK(items[0].kind == detail::item_kind::reply);
  CHECK(items[0].ask_id == 9);
  CHECK(items[0].body == "r");
  CHECK(items.capacity() == capacity); // the storage is kept for the next frame
  auto bad = detail::parse_batch(std::string_view{a}.substr(1, a.size() - 3), items);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code() == errc::validation);
  CHECK(items.size() == 63); // the items before the truncated one
  CHECK_FALSE(detail::parse_batch("", items).has_value());
  CHECK(items.empty());
}

TEST_CASE("transport: asks and tells cross nodes, unreachable nodes fail fast, restarts reconnect",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a, log_b;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b);
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  REQUIRE(b->cluster_port() != 0);
  REQUIRE(b->spawn<greeter>("greeter").has_value());
  REQUIRE(b->spawn<counter>("counter").has_value());
  REQUIRE(a->spawn<caller>("caller").has_value());
  const auto port_b = b->cluster_port();
  add_route(*a, "b", endpoint_of(*b));

  // An agent on A asks an agent on B by address.
  StringValue target;
  target.set_value("b");
  auto r = a->ask<StringValue>("caller", target, 10s);
  REQUIRE(r.has_value());
  CHECK(r->value() == "hello, a from b");

  // A tell arrives (and is ordered before the ask that reads it).
  auto cnt = a->core().lookup(address{"b", "counter"});
  REQUIRE(cnt.has_value());
  for (int i = 0; i < 5; ++i) {
    Int64Value v;
    v.set_value(i + 1);
    a->tell(*cnt, v);
  }
  StringValue q;
  auto total = a->ask<Int64Value>(*cnt, q, 5s);
  REQUIRE(total.has_value());
  CHECK(total->value() == 15);
  CHECK(metric(*a, "af_cluster_peers_connected") == 1);
  CHECK(log_a.count("\"event\":\"peer_connected\"", "\"peer\":\"b\"") == 1);
  CHECK(log_b.count("\"event\":\"peer_connected\"", "\"peer\":\"a\"") == 1);

  // B can reach A back over the link A opened (A's caller is not on B, so ask A's transport's
  // node for an agent that does not exist: a not_found answer from A proves the round trip).
  auto back = b->core().lookup(address{"a", "nobody"});
  REQUIRE(back.has_value());
  auto nf = b->ask<StringValue>(*back, q, 5s);
  REQUIRE_FALSE(nf.has_value());
  CHECK(nf.error().code() == errc::not_found);

  // A node nobody knows: transient at once.
  auto t0 = clock_type::now();
  auto unknown = greet_remote(*a, "nowhere", "edge", 10s);
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error().code() == errc::transient);
  CHECK(clock_type::now() - t0 < 2s);

  // A known route where nothing listens: transient after the refused connect, not the timeout.
  add_route(*a, "c", "127.0.0.1:1"); // a privileged port nothing listens on here
  t0 = clock_type::now();
  auto dead = greet_remote(*a, "c", "edge", 10s);
  REQUIRE_FALSE(dead.has_value());
  CHECK(dead.error().code() == errc::transient);
  CHECK(clock_type::now() - t0 < 3s);
  CHECK(eventually([&] { return log_a.count("\"event\":\"peer_dial_failed\"") >= 1; }, 5s));

  // B restarts on the same port: asks fail transient while it is down, then work again.
  b.reset();
  CHECK(eventually([&] { return metric(*a, "af_cluster_peers_connected") == 0; }, 5s));
  t0 = clock_type::now();
  auto down = greet_remote(*a, "b", "edge", 10s);
  REQUIRE_FALSE(down.has_value());
  CHECK(down.error().code() == errc::transient);
  CHECK(clock_type::now() - t0 < 3s);
  b = must_start("b", "127.0.0.1:" + std::to_string(port_b), secret, log_b);
  REQUIRE(b->spawn<greeter>("greeter").has_value());
  CHECK(eventually([&] { return greet_remote(*a, "b", "edge", 2s).has_value(); }, 15s));
  CHECK(metric(*a, "af_cluster_peer_events_total{event=\"reconnected\"") >= 1);
  CHECK(eventually(
      [&] { return log_a.count("\"event\":\"peer_reconnected\"", "\"peer\":\"b\"") >= 1; }, 5s));
  CHECK(eventually(
      [&] { return log_a.count("\"event\":\"peer_disconnected\"", "\"peer\":\"b\"") >= 1; }, 5s));
}

TEST_CASE("transport: a burst of tells reaches a remote agent complete and in order and none "
          "after a stop",
          "[transport]") {
  // Received tells for one agent are handed to it several per CAF message (envelope_batch):
  // each is still handled once, in order, before an ask that follows them.
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a, log_b;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b);
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  std::atomic<int> handled{0};
  REQUIRE(b->spawn<sequence_checker>("seq").has_value());
  REQUIRE(b->spawn<stopper>("stopper", &handled).has_value());
  add_route(*a, "b", endpoint_of(*b));
  auto seq = a->core().lookup(address{"b", "seq"});
  auto stop = a->core().lookup(address{"b", "stopper"});
  REQUIRE(seq.has_value());
  REQUIRE(stop.has_value());
  Int64Value v;
  for (int i = 1; i <= 50; ++i) {
    v.set_value(i);
    a->tell(*stop, v);
  }
  constexpr int n = 3000;
  for (int i = 1; i <= n; ++i) {
    v.set_value(i);
    a->tell(*seq, v);
  }
  StringValue q;
  auto r = a->ask<StringValue>(*seq, q, 10s);
  REQUIRE(r.has_value());
  CHECK(r->value() == std::to_string(n) + " ordered");
  CHECK(eventually([&] { return !b->core().lookup_registered("stopper").has_value(); }));
  // What was sent after the stopping tell is dropped (as a stopped agent's mailbox is).
  std::this_thread::sleep_for(100ms);
  CHECK(handled.load() == 5);
}

TEST_CASE("transport: a wrong secret and unauthenticated frames are refused, logged, counted",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto good = secret_file(d, "good", "correct horse battery staple");
  const auto bad = secret_file(d, "bad", "incorrect donkey battery staple");
  log_lines log_a, log_b, log_x;
  auto b = must_start("b", "127.0.0.1:0", good, log_b);
  auto a = must_start("a", "127.0.0.1:0", good, log_a);
  auto x = must_start("x", "127.0.0.1:0", bad, log_x);
  REQUIRE(b->spawn<counter>("counter").has_value());
  REQUIRE(b->spawn<greeter>("greeter").has_value());
  const auto seed = "@" + endpoint_of(*b);

  // The outsider dials B through its seed address: its tell and ask get nowhere.
  auto cnt_x = x->core().lookup(address{seed, "counter"});
  REQUIRE(cnt_x.has_value());
  Int64Value one;
  one.set_value(1);
  x->tell(*cnt_x, one);
  auto gx = greet_remote(*x, seed, "x", 5s);
  REQUIRE_FALSE(gx.has_value());
  CHECK(gx.error().code() == errc::transient);
  CHECK(eventually([&] {
    return metric(*b, "af_cluster_peer_refused_total{reason=\"handshake_failed\"") >= 1;
  }));
  CHECK(metric(*x, "af_cluster_peer_refused_total{reason=\"bad_proof\"") >= 1);
  CHECK(eventually(
      [&] {
        return log_b.count("\"event\":\"peer_refused\"", "\"reason\":\"handshake_failed\"") >= 1;
      },
      5s));
  CHECK(eventually(
      [&] { return log_x.count("\"event\":\"peer_refused\"", "\"reason\":\"bad_proof\"") >= 1; },
      5s));

  // Raw clients skip the handshake and send a batch to B's transport (twice, on two
  // connections): each is refused and its connection closed.
  {
    auto& core = x->core();
    af::rng r{1};
    auto msg = std::make_shared<Int64Value>();
    msg->set_value(100);
    auto env = core.make_envelope({"x", "edge"}, {"b", "counter"}, msg, nullptr, 0, "default", r);
    std::string frame;
    detail::begin_frame(frame, detail::frame_type::batch);
    detail::append_item(frame, detail::item_kind::tell, 0, env.encode());
    for (int i = 0; i < 2; ++i) {
      raw_peer raw{b->cluster_port()};
      raw.send_frame(frame);
      CHECK(raw.closed_by_node());
    }
  }
  CHECK(eventually(
      [&] { return metric(*b, "af_cluster_peer_refused_total{reason=\"unauthenticated\"") >= 2; }));
  CHECK(eventually(
      [&] {
        return log_b.count("\"event\":\"peer_refused\"", "\"reason\":\"unauthenticated\"") >= 2;
      },
      5s));

  // Nothing got through: a legitimate peer reads the counter at zero.
  auto cnt_a = a->core().lookup(address{"@" + endpoint_of(*b), "counter"});
  REQUIRE(cnt_a.has_value());
  StringValue q;
  auto total = a->ask<Int64Value>(*cnt_a, q, 5s);
  REQUIRE(total.has_value());
  CHECK(total->value() == 0);
}

TEST_CASE("transport: oversized and garbage frames are refused - the node keeps serving",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a, log_b, log_x;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b, {{"cluster.max_frame_bytes", "65536"}});
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  auto x = must_start("x", "127.0.0.1:0", secret, log_x);
  REQUIRE(b->spawn<greeter>("greeter").has_value());
  add_route(*a, "b", endpoint_of(*b));
  REQUIRE(greet_remote(*a, "b").has_value());

  // Raw garbage: its first four bytes declare a frame of 2 GiB, refused before anything is
  // allocated for it, and the connection is closed.
  CHECK(send_raw(b->cluster_port(), std::string(4096, '\x7f') + "garbage"));

  // Frames from raw clients: an oversized one (declared, not sent), then one of an unknown type.
  {
    raw_peer big{b->cluster_port()};
    big.send_frame(std::string(1024, 'B'), 100 * 1024);
    CHECK(big.next_frame().starts_with("R")); // told why, then closed
    CHECK(big.closed_by_node());
    raw_peer junk{b->cluster_port()};
    junk.send_frame("Zgarbage");
    CHECK(junk.next_frame().starts_with("R"));
    CHECK(junk.closed_by_node());
  }
  CHECK(eventually([&] {
    return metric(*b, "af_cluster_peer_refused_total{reason=\"oversized\"") >= 1
           && metric(*b, "af_cluster_peer_refused_total{reason=\"malformed\"") >= 1;
  }));
  CHECK(eventually(
      [&] { return log_b.count("\"event\":\"peer_refused\"", "\"reason\":\"oversized\"") >= 1; },
      5s));
  CHECK(eventually(
      [&] {
        return log_b.count("\"event\":\"peer_refused\"", "exceeds cluster.max_frame_bytes") >= 1;
      },
      5s));

  // An authenticated peer that sends an oversized batch is refused too; its ask fails, it
  // authenticates again and later asks work.
  auto big = greet_remote(*a, "b", std::string(80 * 1024, 'w'), 5s);
  REQUIRE_FALSE(big.has_value());
  CHECK(big.error().code() == errc::transient);
  CHECK(eventually(
      [&] { return log_a.count("\"event\":\"peer_refused_us\"", "\"reason\":\"oversized\"") >= 1; },
      5s));
  CHECK(eventually([&] { return greet_remote(*a, "b", "again", 2s).has_value(); }, 10s));
  // And B is still up for everyone.
  auto from_x = greet_remote(*x, "@" + endpoint_of(*b), "x", 5s);
  REQUIRE(from_x.has_value());
  CHECK(from_x->value() == "hello, x from b");
}

namespace {

/// Test certificates made with the openssl CLI: a cluster CA with two node certificates, and a
/// rogue CA with one.
struct test_pki {
  explicit test_pki(const test::temp_dir& d) : dir(d.path().string()) {
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    auto run = [&](const std::string& cmd) {
      const auto full = "cd '" + dir + "' && " + cmd + " >/dev/null 2>&1";
      REQUIRE(std::system(full.c_str()) == 0);
    };
    for (const std::string ca : {"ca", "rogue-ca"})
      run("openssl req -x509" + ec + "-keyout " + ca + ".key -out " + ca
          + ".pem -days 2 -subj /CN=" + ca);
    auto issue = [&](const std::string& name, const std::string& ca) {
      run("openssl req" + ec + "-keyout " + name + ".key -out " + name + ".csr -subj /CN=" + name);
      run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca
          + ".key -CAcreateserial -out " + name + ".pem -days 2");
    };
    issue("node-a", "ca");
    issue("node-b", "ca");
    issue("rogue", "rogue-ca");
  }
  flags tls(const std::string& name, const std::string& ca = "ca") const {
    return {{"cluster.tls_cert", dir + "/" + name + ".pem"},
            {"cluster.tls_key", dir + "/" + name + ".key"},
            {"cluster.tls_ca", dir + "/" + ca + ".pem"}};
  }
  std::string dir;
};

/// A TLS client without a certificate that does not check the node's either (with `anon`: it
/// offers only anonymous cipher suites, over TLS 1.2) connects to `port`, sends a Hello frame
/// and waits up to 3 s for a frame back; true if one came.
bool tls_client_gets_frame(std::uint16_t port, bool anon) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  REQUIRE(ctx != nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  if (anon) {
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    REQUIRE(SSL_CTX_set_cipher_list(ctx, "aNULL:@SECLEVEL=0") == 1);
  }
  int fd = dial_loopback(port, 3);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  bool got = false;
  if (SSL_connect(ssl) == 1) {
    v1::TransportHello h;
    h.set_version(1);
    h.set_node("anon");
    h.set_nonce(std::string(detail::k_nonce_bytes, 'n'));
    std::string f;
    detail::begin_frame(f, detail::frame_type::hello);
    h.AppendToString(&f);
    std::string w;
    for (int i = 0; i < 4; ++i)
      w.push_back(static_cast<char>((f.size() >> (8 * i)) & 0xff));
    w += f;
    if (SSL_write(ssl, w.data(), static_cast<int>(w.size())) > 0) {
      char buf[64];
      got = SSL_read(ssl, buf, sizeof(buf)) > 0;
    }
  }
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return got;
}

} // namespace

TEST_CASE("transport: mutual TLS works - untrusted and anonymous peers are refused",
          "[transport][tls]") {
  test::temp_dir d{"af-transport-tls"};
  test_pki pki{d};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a, log_b, log_r, log_p;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b, pki.tls("node-b"));
  auto a = must_start("a", "127.0.0.1:0", secret, log_a, pki.tls("node-a"));
  REQUIRE(b->spawn<greeter>("greeter").has_value());
  add_route(*a, "b", endpoint_of(*b));
  auto ok = greet_remote(*a, "b");
  REQUIRE(ok.has_value());
  CHECK(ok->value() == "hello, edge from b");

  // A certificate from another CA (it trusts the cluster CA, and knows the secret): refused by
  // TLS before the handshake could even start.
  auto rogue = must_start("r", "127.0.0.1:0", secret, log_r, pki.tls("rogue", "ca"));
  auto gr = greet_remote(*rogue, "@" + endpoint_of(*b), "r", 5s);
  REQUIRE_FALSE(gr.has_value());
  CHECK(gr.error().code() == errc::transient);
  CHECK(eventually([&] { return log_r.count("\"event\":\"peer_dial_failed\"") >= 1; }, 5s));
  CHECK(log_b.count("\"event\":\"peer_connected\"", "\"peer\":\"r\"") == 0);

  // A plaintext node (no TLS) cannot talk to a TLS node either.
  auto plain = must_start("p", "127.0.0.1:0", secret, log_p);
  auto gp = greet_remote(*plain, "@" + endpoint_of(*b), "p", 5s);
  REQUIRE_FALSE(gp.has_value());
  CHECK(log_b.count("\"event\":\"peer_connected\"", "\"peer\":\"p\"") == 0);

  // Anonymous TLS (only aNULL suites offered, TLS 1.2) and a TLS client without a certificate
  // (which does not check the node's either): both refused by the node's TLS layer, counted
  // and logged, and neither gets a frame from the transport.
  CHECK_FALSE(tls_client_gets_frame(b->cluster_port(), true));
  CHECK_FALSE(tls_client_gets_frame(b->cluster_port(), false));
  CHECK(eventually([&] { return metric(*b, "af_cluster_peer_refused_total{reason=\"tls\"") >= 3; },
                   5s));
  CHECK(eventually(
      [&] { return log_b.count("\"event\":\"peer_refused\"", "\"reason\":\"tls\"") >= 3; }, 5s));
  // B keeps serving its cluster.
  CHECK(eventually([&] { return greet_remote(*a, "b", "again", 2s).has_value(); }, 10s));
}

TEST_CASE("transport: without TLS the payload is on the wire in clear - with TLS it is not",
          "[transport][tls]") {
  test::temp_dir d{"af-transport-wire"};
  test_pki pki{d};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  const std::string marker = "AF-WIRE-MARKER-5f3a9c";
  for (const bool tls : {false, true}) {
    DYNAMIC_SECTION((tls ? "tls" : "plain")) {
      log_lines log_a, log_b;
      auto b = must_start("b", "127.0.0.1:0", secret, log_b, tls ? pki.tls("node-b") : flags{});
      auto a = must_start("a", "127.0.0.1:0", secret, log_a, tls ? pki.tls("node-a") : flags{});
      REQUIRE(b->spawn<greeter>("greeter").has_value());
      recording_relay relay{b->cluster_port()};
      add_route(*a, "b", "127.0.0.1:" + std::to_string(relay.port()));
      auto r = greet_remote(*a, "b", marker);
      REQUIRE(r.has_value());
      CHECK(r->value() == "hello, " + marker + " from b");
      const auto wire = relay.captured();
      INFO("captured " << wire.size() << " bytes");
      CHECK(wire.size() > marker.size());
      if (tls)
        CHECK(wire.find(marker) == std::string::npos);
      else
        CHECK(wire.find(marker) != std::string::npos);
      a.reset();
      b.reset();
    }
  }
}

TEST_CASE("transport: a peer over cluster.peer_rate is limited, counted and logged",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a, log_b;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b, {{"cluster.peer_rate", "5"}});
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  REQUIRE(b->spawn<counter>("counter").has_value());
  add_route(*a, "b", endpoint_of(*b));
  auto cnt = a->core().lookup(address{"b", "counter"});
  REQUIRE(cnt.has_value());
  Int64Value one;
  one.set_value(1);
  for (int i = 0; i < 40; ++i)
    a->tell(*cnt, one);
  CHECK(eventually([&] {
    return metric(*b, "af_cluster_envelopes_dropped_total{reason=\"rate_limited\"") >= 1;
  }));
  CHECK(eventually(
      [&] { return log_b.count("\"event\":\"peer_rate_limited\"", "\"peer\":\"a\"") >= 1; }, 5s));
  // Once the bucket refills (5/s), an ask gets through and shows that not all 40 arrived.
  std::optional<std::int64_t> seen;
  CHECK(eventually(
      [&] {
        auto r = a->ask<Int64Value>(*cnt, StringValue{}, 2s);
        if (!r) return false;
        seen = r->value();
        return true;
      },
      10s));
  REQUIRE(seen.has_value());
  CHECK(*seen >= 1);
  CHECK(*seen < 40);
}

TEST_CASE("transport: a seed address naming this node itself is served here", "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a;
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  REQUIRE(a->spawn<greeter>("greeter").has_value());
  auto r = greet_remote(*a, "@" + endpoint_of(*a), "me", 5s);
  REQUIRE(r.has_value());
  CHECK(r->value() == "hello, me from a");
}

TEST_CASE("transport: batch frames are bound to the session (MAC) and cannot be replayed",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const std::string secret_text = "correct horse battery staple";
  const auto secret = secret_file(d, "secret", secret_text);
  log_lines log_a, log_b, log_x;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b);
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  auto x = must_start("x", "127.0.0.1:0", secret, log_x);
  REQUIRE(b->spawn<counter>("counter").has_value());
  std::optional<raw_peer> peer;
  auto next_frame = [&]() { return peer->next_frame(); };
  // The handshake done by hand on a new connection, as a peer named "m" that knows the secret.
  auto handshake = [&]() -> std::string {
    peer.emplace(b->cluster_port());
    auto nc = detail::make_nonce();
    REQUIRE(nc.has_value());
    v1::TransportHello h;
    h.set_version(1);
    h.set_node("m");
    h.set_nonce(*nc);
    std::string f;
    detail::begin_frame(f, detail::frame_type::hello);
    h.AppendToString(&f);
    peer->send_frame(f);
    auto cf = next_frame();
    REQUIRE(!cf.empty());
    REQUIRE(cf[0] == 'C');
    v1::TransportChallenge c;
    REQUIRE(c.ParseFromString(cf.substr(1)));
    CHECK(detail::proofs_equal(c.proof(),
                               detail::handshake_proof(secret_text, detail::proof_role::server, "m",
                                                       "b", *nc, c.nonce())));
    v1::TransportProof p;
    p.set_proof(
        detail::handshake_proof(secret_text, detail::proof_role::client, "m", "b", *nc, c.nonce()));
    detail::begin_frame(f, detail::frame_type::proof);
    p.AppendToString(&f);
    peer->send_frame(f);
    auto wf = next_frame();
    REQUIRE(wf == "W");
    return detail::session_key(secret_text, "m", "b", *nc, c.nonce());
  };
  auto batch = [&](const std::string& key, std::uint64_t seq, std::int64_t value, bool good_mac) {
    af::rng r{seq};
    auto msg = std::make_shared<Int64Value>();
    msg->set_value(value);
    auto env =
        x->core().make_envelope({"m", "edge"}, {"b", "counter"}, msg, nullptr, 0, "default", r);
    std::string items;
    detail::append_item(items, detail::item_kind::tell, 0, env.encode());
    std::string f;
    detail::begin_frame(f, detail::frame_type::batch);
    for (int i = 0; i < 8; ++i)
      f.push_back(static_cast<char>((seq >> (8 * i)) & 0xff));
    auto mac = detail::frame_mac(key, 'c', seq, items);
    if (!good_mac) mac[0] = static_cast<char>(mac[0] ^ 1);
    f += mac;
    f += items;
    return f;
  };
  auto counter_value = [&]() {
    auto cnt = a->core().lookup(address{"@" + endpoint_of(*b), "counter"});
    REQUIRE(cnt.has_value());
    auto v = a->ask<Int64Value>(*cnt, StringValue{}, 5s);
    REQUIRE(v.has_value());
    return v->value();
  };

  auto key = handshake();
  const auto good = batch(key, 1, 5, true);
  peer->send_frame(good);
  CHECK(eventually([&] { return counter_value() == 5; }, 5s));
  // The same frame again: refused as a replay; the connection is closed.
  peer->send_frame(good);
  CHECK(eventually(
      [&] { return metric(*b, "af_cluster_peer_refused_total{reason=\"bad_sequence\"") >= 1; }));
  CHECK(next_frame().starts_with("R")); // the peer is told
  CHECK(peer->closed_by_node());
  // A new session, and a frame whose MAC is wrong (forged, or made with another session's key).
  key = handshake();
  peer->send_frame(batch(key, 1, 100, false));
  CHECK(eventually(
      [&] { return metric(*b, "af_cluster_peer_refused_total{reason=\"bad_mac\"") >= 1; }));
  CHECK(eventually(
      [&] { return log_b.count("\"event\":\"peer_refused\"", "\"reason\":\"bad_mac\"") >= 1; },
      5s));
  CHECK(counter_value() == 5);
}

TEST_CASE("transport: two nodes that dial each other at once end up with working links",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  for (int round = 0; round < 5; ++round) {
    log_lines log_a, log_b;
    auto a = must_start("a", "127.0.0.1:0", secret, log_a);
    auto b = must_start("b", "127.0.0.1:0", secret, log_b);
    REQUIRE(a->spawn<greeter>("greeter").has_value());
    REQUIRE(b->spawn<greeter>("greeter").has_value());
    // Both learn the other's route (as membership would tell them) and dial at once.
    std::thread ta([&] { add_route(*a, "b", endpoint_of(*b)); });
    add_route(*b, "a", endpoint_of(*a));
    ta.join();
    auto ab = greet_remote(*a, "b", "a", 5s);
    auto ba = greet_remote(*b, "a", "b", 5s);
    INFO("round " << round << ": " << (ab ? "ok" : ab.error().to_string()) << " / "
                  << (ba ? "ok" : ba.error().to_string()));
    CHECK(ab.has_value());
    CHECK(ba.has_value());
    CHECK(metric(*a, "af_cluster_peers_connected") == 1);
    CHECK(metric(*b, "af_cluster_peers_connected") == 1);
    CHECK(metric(*a, "af_cluster_peer_refused_total") == 0);
    CHECK(metric(*b, "af_cluster_peer_refused_total") == 0);
  }
}

namespace {
/// Threads of this process now (/proc/self/task).
std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task"))
    ++n;
  return n;
}
} // namespace

TEST_CASE("transport: a supervisor restart joins the I/O thread and listens on the same port",
          "[transport]") {
  test::temp_dir d{"af-transport"};
  const auto secret = secret_file(d, "secret", "correct horse battery staple");
  log_lines log_a, log_b;
  auto b = must_start("b", "127.0.0.1:0", secret, log_b);
  auto a = must_start("a", "127.0.0.1:0", secret, log_a);
  REQUIRE(b->spawn<greeter>("greeter").has_value());
  add_route(*a, "b", endpoint_of(*b));
  REQUIRE(greet_remote(*a, "b").has_value());
  const auto port = b->cluster_port();
  const auto threads = thread_count();
  for (int round = 0; round < 3; ++round) {
    auto old = b->core().registry.find(k_cluster_transport);
    REQUIRE(old != nullptr);
    caf::anon_send_exit(caf::actor_cast<caf::actor>(old), caf::exit_reason::kill);
    CHECK(eventually([&] {
      auto now = b->core().registry.find(k_cluster_transport);
      return now != nullptr && now != old;
    }));
    // A sees the connection go, dials again, and B's new transport answers on the same port.
    CHECK(eventually([&] { return greet_remote(*a, "b", "again", 2s).has_value(); }, 15s));
    CHECK(b->cluster_port() == port);
    CHECK(log_b.count("\"event\":\"cluster_listening\"", std::to_string(port))
          == static_cast<std::size_t>(round) + 2);
  }
  // The old I/O threads were joined: as many threads as before the restarts.
  CHECK(eventually([&] { return thread_count() == threads; }, 5s));
}
