// The cluster transport (af.cluster.transport): one actor per node, over a socket layer of its own
// (transport_io: TCP, or mutual TLS through asio::ssl, frames prefixed with their length, one I/O
// thread). Local agents reach other nodes through it (node_core::remote hands out agent_refs whose
// actor is this one); it batches envelopes into frames, authenticates peers with a mutual HMAC
// challenge before accepting any envelope, limits frame size and per-peer rate, and reconnects
// with backoff.
//
// One link per TCP connection, whoever dialled: the dialling side sends Hello, the other
// Challenge (with its proof), the dialler Proof, the listener Welcome. Only then are batches
// accepted, in both directions, and each batch frame carries a sequence number and an HMAC under
// the session key. A peer that breaks the rules is told why (Refused) and its connection is
// closed; a declared frame length over cluster.max_frame_bytes is refused before anything is
// allocated for it. Two nodes that dial each other at once keep both connections (both work).
#include "transport.hpp"

#include "af/node.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/transport.pb.h"
#include "agent_host.hpp"
#include "caf_glue.hpp"
#include "node_core.hpp"
#include "transport_auth.hpp"
#include "transport_frame.hpp"

#include "transport_io.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>

namespace af::detail {

namespace {

using flush_atom = caf::atom_constant<caf::atom("afflush")>;
using redial_atom = caf::atom_constant<caf::atom("afredial")>;
using sweep_atom = caf::atom_constant<caf::atom("afsweep")>;
// Reports of the I/O thread (transport_io's callbacks), one message each.
using io_accepted_atom = caf::atom_constant<caf::atom("afioacc")>;
using io_connected_atom = caf::atom_constant<caf::atom("afioconn")>;
using io_dial_failed_atom = caf::atom_constant<caf::atom("afiodfail")>;
using io_frames_atom = caf::atom_constant<caf::atom("afiofrm")>;
using io_oversized_atom = caf::atom_constant<caf::atom("afiobig")>;
using io_closed_atom = caf::atom_constant<caf::atom("afioclose")>;
using io_tls_refused_atom = caf::atom_constant<caf::atom("afiotls")>;

constexpr std::uint32_t k_protocol_version = 1;
/// A batch frame starts with its type, sequence number (8 bytes) and MAC.
constexpr std::size_t k_batch_header = 1 + 8 + k_mac_bytes;
constexpr auto k_sweep_period = std::chrono::milliseconds(250);
/// A batch frame is sent once it holds this many bytes, even while envelopes keep coming.
constexpr std::size_t k_flush_bytes = 256 * 1024;
/// A link keeps its frame buffer between frames up to this capacity.
constexpr std::size_t k_keep_frame_buffer = 2 * k_flush_bytes;
/// An ask whose reply never comes (the remote agent dropped it) is forgotten after this long;
/// the asking agent's own timeout has answered it long before.
constexpr auto k_pending_ask_ttl = std::chrono::minutes(10);

enum class link_state { awaiting_hello, hello_sent, awaiting_proof, awaiting_welcome, up, refused };
enum class dial_state { idle, connecting, handshaking, up, backoff };

std::string_view to_string(link_state s) {
  switch (s) {
  case link_state::awaiting_hello:
    return "awaiting_hello";
  case link_state::hello_sent:
    return "hello_sent";
  case link_state::awaiting_proof:
    return "awaiting_proof";
  case link_state::awaiting_welcome:
    return "awaiting_welcome";
  case link_state::up:
    return "up";
  case link_state::refused:
    return "refused";
  }
  return "?";
}

/// Refusal reasons (label values of af_cluster_peer_refused_total).
namespace refusal {
constexpr std::string_view unauthenticated = "unauthenticated";
constexpr std::string_view bad_proof = "bad_proof";
constexpr std::string_view handshake_failed = "handshake_failed";
constexpr std::string_view handshake_timeout = "handshake_timeout";
constexpr std::string_view oversized = "oversized";
constexpr std::string_view malformed = "malformed";
constexpr std::string_view wrong_node = "wrong_node";
constexpr std::string_view bad_mac = "bad_mac";
constexpr std::string_view bad_sequence = "bad_sequence";
constexpr std::string_view unexpected_hello = "unexpected_hello";
constexpr std::string_view tls = "tls";
} // namespace refusal

/// One connection (its id is transport_io's connection id) and the session on it.
struct link {
  std::uint64_t id = 0;
  link_state state = link_state::refused;
  bool outbound = false;
  std::string node;     ///< the peer's node name (known after Hello / Challenge)
  std::string remote;   ///< "host:port" of the peer, when known
  std::string endpoint; ///< where the peer's transport listens
  std::string expected; ///< the node name the dialler expects ("" for "@host:port")
  std::string my_nonce, peer_nonce;
  std::string key; ///< the session key (set when the handshake succeeds)
  std::uint64_t out_seq = 0, in_seq = 0;
  std::string out; ///< the batch frame being filled
  std::size_t out_items = 0;
  bool dirty = false;   ///< `out` holds items not yet sent
  bool goodbye = false; ///< the peer said it shuts down cleanly
  duration since{};
  double tokens = 0;
  duration refilled{};
  std::uint64_t refusals = 0;
  std::uint64_t rate_drops = 0;
};

struct queued {
  envelope env;
  caf::response_promise rp;
  bool ask = false;
};

struct dialer {
  std::string endpoint;
  host_port hp;
  dial_state state = dial_state::idle;
  std::uint32_t failures = 0;
  std::deque<queued> queue;
  std::uint64_t link = 0;
  bool persistent = false;      ///< a member's route: keep reconnecting while the route is known
  std::uint64_t generation = 0; ///< stale redial timers and connect replies are ignored
};

struct dial_attempt {
  std::string endpoint;
  std::uint64_t generation = 0;
};

struct pending_ask {
  caf::response_promise rp;
  envelope request;
  std::uint64_t link = 0;
  duration at{};
};

struct route {
  std::string endpoint;
  bool persistent = false;
};

class transport_actor : public caf::event_based_actor {
public:
  transport_actor(caf::actor_config& cfg, node_core* core, transport_options opts,
                  std::shared_ptr<transport_status> status)
      : caf::event_based_actor(cfg), core_(core), opts_(std::move(opts)),
        status_(std::move(status)), rng_(core->svc.random->next_u64()) {}

  const char* name() const override { return "af.cluster.transport"; }

  caf::behavior make_behavior() override {
    set_default_handler(
        [this](caf::scheduled_actor*, caf::message_view&) -> caf::result<caf::message> {
          refuse(nullptr, refusal::malformed, "a message of an unexpected type", false);
          return caf::make_error(caf::sec::unexpected_message);
        });
    if (!listen()) return {};
    delayed_send(this, k_sweep_period, sweep_atom::value);
    return {
        [this](envelope& e) {
          on_local(std::move(e));
          after_message();
        },
        [this](io_frames_atom, std::uint64_t conn, std::vector<std::string>& frames) {
          for (const auto& f : frames) {
            auto* l = find_link(conn);
            if (l == nullptr || l->state == link_state::refused) break;
            on_frame(*l, f);
          }
          after_message();
        },
        [this](io_accepted_atom, std::uint64_t conn, std::string& remote) {
          auto& l = new_link(conn, false);
          l.remote = std::move(remote);
          l.state = link_state::awaiting_hello;
        },
        [this](io_connected_atom, std::uint64_t token, std::uint64_t conn) {
          on_connected(token, conn);
          after_message();
        },
        [this](io_dial_failed_atom, std::uint64_t token, const std::string& why) {
          auto a = dials_.find(token);
          if (a == dials_.end()) return;
          auto attempt = std::move(a->second);
          dials_.erase(a);
          auto it = dialers_.find(attempt.endpoint);
          if (it == dialers_.end() || it->second.generation != attempt.generation) return;
          dial_failed(it->second, "cannot connect: " + why);
        },
        [this](io_oversized_atom, std::uint64_t conn, std::uint64_t declared) {
          if (auto* l = find_link(conn))
            refuse(l, refusal::oversized,
                   "frame of " + std::to_string(declared)
                       + " bytes exceeds cluster.max_frame_bytes ("
                       + std::to_string(opts_.max_frame_bytes) + ")",
                   true);
          after_message();
        },
        [this](io_closed_atom, std::uint64_t conn, const std::string& why) {
          on_closed(conn, why);
          after_message();
        },
        [this](io_tls_refused_atom, const std::string& remote, const std::string& why) {
          count_refused(refusal::tls);
          core_->log.warn("peer_refused", "TLS handshake with " + remote + " failed: " + why,
                          {{"reason", std::string{refusal::tls}}, {"remote", remote}});
        },
        [this](flush_atom) {
          flush_scheduled_ = false;
          flush_dirty();
        },
        [this](redial_atom, const std::string& endpoint, std::uint64_t gen) {
          on_redial(endpoint, gen);
          after_message();
        },
        [this](sweep_atom) {
          sweep();
          after_message();
          delayed_send(this, k_sweep_period, sweep_atom::value);
        },
    };
  }

  void on_exit() override {
    // Fail what waits here: the asking agents hear `transient` rather than their timeout.
    for (auto& [id, p] : asks_)
      p.rp.deliver(error_reply(p.request, {errc::transient, "the cluster transport stopped"}));
    asks_.clear();
    for (auto& [ep, d] : dialers_)
      fail_queue(d, "the cluster transport stopped");
    if (io_) {
      // Peers hear a goodbye (a clean shutdown, not a crash), then the connections close and the
      // I/O thread is joined: a restarted transport starts from a clean slate.
      std::string bye;
      begin_frame(bye, frame_type::goodbye);
      for (auto& [id, l] : links_)
        if (l.state == link_state::up) io_->send(id, bye);
      io_->stop();
      io_.reset();
    }
    links_.clear();
    dialers_.clear();
  }

private:
  // --- setup ----------------------------------------------------------------------------------

  /// Binds cluster.listen (a restart binds the port the first start got) and starts the I/O
  /// thread. False when it cannot listen: the failure is logged and reported, the actor quits.
  bool listen() {
    io_options o;
    o.host = opts_.listen.host;
    o.port = opts_.listen.port;
    {
      std::lock_guard g{status_->mtx};
      if (status_->port != 0) o.port = status_->port; // a restart listens where the first did
    }
    o.max_frame_bytes = opts_.max_frame_bytes;
    o.connect_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(opts_.handshake_timeout);
    o.tls = opts_.tls;
    o.tls_cert = opts_.tls_cert;
    o.tls_key = opts_.tls_key;
    o.tls_ca = opts_.tls_ca;
    auto io = transport_io::start(std::move(o), make_events());
    if (!io) {
      error e{errc::transient, "cluster.listen: cannot listen on " + opts_.listen.to_string() + ": "
                                   + io.error().message()};
      core_->log.error("cluster_listen_failed", e.message());
      {
        std::lock_guard g{status_->mtx};
        status_->failed = e;
        status_->cv.notify_all();
      }
      quit(caf::make_error(caf::sec::cannot_open_port));
      return false;
    }
    io_ = std::move(*io);
    port_ = io_->port();
    advertise_ =
        opts_.advertise.empty() ? opts_.listen.host + ":" + std::to_string(port_) : opts_.advertise;
    core_->log.info("cluster_listening", "cluster transport listening",
                    {{"address", opts_.listen.host + ":" + std::to_string(port_)},
                     {"advertise", advertise_},
                     {"tls", opts_.tls}});
    std::lock_guard g{status_->mtx};
    status_->port = port_;
    status_->published = true;
    status_->cv.notify_all();
    return true;
  }

  /// The I/O thread's reports become messages to this actor (all frames of one read in one).
  io_events make_events() {
    auto self = caf::actor_cast<caf::actor>(this);
    io_events ev;
    ev.accepted = [self](std::uint64_t conn, std::string remote) {
      caf::anon_send(self, io_accepted_atom::value, conn, std::move(remote));
    };
    ev.connected = [self](std::uint64_t token, std::uint64_t conn) {
      caf::anon_send(self, io_connected_atom::value, token, conn);
    };
    ev.connect_failed = [self](std::uint64_t token, std::string why) {
      caf::anon_send(self, io_dial_failed_atom::value, token, std::move(why));
    };
    ev.frames = [self](std::uint64_t conn, std::vector<std::string> frames) {
      caf::anon_send(self, io_frames_atom::value, conn, std::move(frames));
    };
    ev.oversized = [self](std::uint64_t conn, std::size_t declared) {
      caf::anon_send(self, io_oversized_atom::value, conn, static_cast<std::uint64_t>(declared));
    };
    ev.closed = [self](std::uint64_t conn, std::string why) {
      caf::anon_send(self, io_closed_atom::value, conn, std::move(why));
    };
    ev.tls_refused = [self](std::string remote, std::string why) {
      caf::anon_send(self, io_tls_refused_atom::value, std::move(remote), std::move(why));
    };
    return ev;
  }

  // --- metrics --------------------------------------------------------------------------------

  counter_handle counter(std::string_view name, std::string_view help, std::string_view label,
                         std::string_view value) {
    const auto key = std::string{name} + "|" + std::string{value};
    auto it = counters_.find(key);
    if (it != counters_.end()) return it->second;
    auto h = core_->metrics->counter(name, help, {{std::string{label}, std::string{value}}});
    auto handle = h ? *h : counter_handle{};
    counters_.emplace(key, handle);
    return handle;
  }
  void count_refused(std::string_view reason) {
    counter("af_cluster_peer_refused_total",
            "Frames and handshakes refused from cluster peers, by reason", "reason", reason)
        .inc();
  }
  void count_dropped(std::string_view reason, double n = 1) {
    counter("af_cluster_envelopes_dropped_total",
            "Envelopes the cluster transport could not deliver or send, by reason", "reason",
            reason)
        .inc(n);
  }
  void count_event(std::string_view event) {
    counter("af_cluster_peer_events_total",
            "Cluster peer connection events (connected, disconnected, dial_failed, reconnected)",
            "event", event)
        .inc();
  }
  void count_envelopes(std::string_view direction, double n) {
    counter("af_cluster_envelopes_total", "Envelopes through the cluster transport", "direction",
            direction)
        .inc(n);
  }
  void count_frames(std::string_view direction) {
    counter("af_cluster_frames_total", "Frames (envelope batches) through the cluster transport",
            "direction", direction)
        .inc();
  }
  void update_peers_gauge() {
    if (!peers_gauge_) {
      auto g = core_->metrics->gauge("af_cluster_peers_connected",
                                     "Authenticated cluster peers connected now");
      if (g) peers_gauge_ = *g;
    }
    peers_gauge_.set(static_cast<double>(by_node_.size()));
  }

  // --- helpers --------------------------------------------------------------------------------

  duration now() const { return core_->svc.clk->monotonic(); }

  envelope error_reply(const envelope& request, const error& e) {
    return core_->make_reply(request.receiver(), request, error_payload(e), rng_);
  }

  link* find_link(std::uint64_t id) {
    auto it = links_.find(id);
    return it == links_.end() ? nullptr : &it->second;
  }

  /// A new link for connection `conn` (inbound: accepted here; outbound: dialled).
  link& new_link(std::uint64_t conn, bool outbound) {
    auto& l = links_[conn];
    l.id = conn;
    l.outbound = outbound;
    l.since = now();
    l.refilled = l.since;
    l.tokens = opts_.peer_rate;
    return l;
  }

  std::string remote_of(const link& l) const {
    return l.remote.empty() ? "conn:" + std::to_string(l.id) : l.remote;
  }

  void send_frame(link& l, std::string_view frame) {
    count_frames("out");
    io_->send(l.id, frame);
  }

  template <class Msg>
  void send_control(link& l, frame_type t, const Msg& m) {
    std::string f;
    begin_frame(f, t);
    m.AppendToString(&f);
    send_frame(l, f);
  }

  /// Logs (first ten per link, then every hundredth) and counts a refusal; with `l`, the peer is
  /// told why when `tell_peer`, pending asks through the link fail and its connection closes.
  void refuse(link* l, std::string_view reason, const std::string& detail, bool tell_peer) {
    count_refused(reason);
    const std::uint64_t n = l != nullptr ? ++l->refusals : 1;
    if (n <= 10 || n % 100 == 0) {
      nlohmann::json extra{{"reason", std::string{reason}}, {"refusals", n}};
      if (l != nullptr) {
        extra["remote"] = remote_of(*l);
        if (!l->node.empty()) extra["peer"] = l->node;
        extra["state"] = std::string{to_string(l->state)};
      }
      core_->log.warn("peer_refused", detail, extra);
    }
    if (l == nullptr || l->state == link_state::refused) return;
    if (tell_peer) {
      v1::TransportRefused r;
      r.set_reason(std::string{reason});
      r.set_message(detail);
      send_control(*l, frame_type::refused, r);
    }
    link_lost(*l, "refused: " + std::string{reason}, true);
    l->state = link_state::refused;
    io_->close(l->id);
  }

  // --- local side: envelopes from this node's agents -------------------------------------------

  void on_local(envelope e) {
    const bool ask = current_message_id().is_request();
    const auto& s = current_sender();
    // Only this node's actors talk to the transport actor (peers reach it through its sockets).
    if (s == nullptr || s->node() != home_system().node()) {
      refuse(nullptr, refusal::unauthenticated, "an envelope without a local sender", false);
      if (ask) make_response_promise().deliver(caf::make_error(caf::sec::unexpected_message));
      return;
    }
    caf::response_promise rp;
    if (ask) rp = make_response_promise();
    const auto& to = e.receiver();
    if (to.node.empty() || to.node == core_->node_name) {
      on_control(std::move(e), std::move(rp), ask);
      return;
    }
    route_out(queued{std::move(e), std::move(rp), ask});
  }

  /// Envelopes addressed to the transport itself: PeerRoutes from membership, and
  /// TransportInfoRequest (membership learning its own endpoint).
  void on_control(envelope e, caf::response_promise rp, bool ask) {
    if (const auto* pr = e.payload_as<v1::PeerRoutes>()) {
      apply_routes(*pr);
      if (ask) rp.deliver(core_->make_reply(e.receiver(), e, empty_payload(), rng_));
      return;
    }
    if (e.payload_as<v1::TransportInfoRequest>() != nullptr) {
      if (ask) answer_info(e, rp);
      return;
    }
    error err{errc::validation,
              "af.cluster.transport accepts PeerRoutes and TransportInfoRequest, not '"
                  + e.payload_type_name() + "' (to " + e.receiver().to_string() + ")"};
    core_->log.warn("transport_message_refused", err.message());
    if (ask) rp.deliver(error_reply(e, err));
  }

  void answer_info(const envelope& request, caf::response_promise& rp) {
    auto info = std::make_shared<v1::TransportInfo>();
    info->set_node(core_->node_name);
    info->set_endpoint(advertise_);
    rp.deliver(core_->make_reply(request.receiver(), request, std::move(info), rng_));
  }

  void apply_routes(const v1::PeerRoutes& pr) {
    for (const auto& m : pr.members()) {
      if (m.node() == core_->node_name || m.node().empty()) continue;
      if (m.state() == v1::MEMBER_DEAD || m.state() == v1::MEMBER_LEFT) {
        auto it = routes_.find(m.node());
        if (it != routes_.end()) {
          if (auto d = dialers_.find(it->second.endpoint); d != dialers_.end())
            d->second.persistent = false;
          routes_.erase(it);
        }
        continue;
      }
      if (m.endpoint().empty() || !parse_host_port(m.endpoint(), "endpoint")) continue;
      auto& r = routes_[m.node()];
      r.endpoint = m.endpoint();
      r.persistent = true;
      auto& d = dialer_for(r.endpoint);
      d.persistent = true;
      // Connect ahead of the first message, unless this node already has a link to it.
      if (!by_node_.contains(m.node()) && d.state == dial_state::idle) dial(d);
    }
  }

  void fail_fast(queued& q, errc code, const std::string& why, std::string_view reason) {
    count_dropped(reason);
    if (q.ask)
      q.rp.deliver(error_reply(q.env, {code, why}));
    else
      core_->log.debug("envelope_dropped", why,
                       {{"reason", std::string{reason}}, {"to", q.env.receiver().to_string()}});
  }

  void route_out(queued q) {
    const auto& node = q.env.receiver().node;
    if (auto it = by_node_.find(node); it != by_node_.end()) {
      if (auto* l = find_link(it->second); l != nullptr && l->state == link_state::up) {
        send_item(*l, std::move(q));
        return;
      }
    }
    std::string endpoint;
    if (node.starts_with('@')) {
      endpoint = node.substr(1);
      if (endpoint == advertise_ || endpoint == local_endpoint()) {
        deliver_here(std::move(q)); // a seed list that names this node itself
        return;
      }
    } else if (auto r = routes_.find(node); r != routes_.end()) {
      endpoint = r->second.endpoint;
    } else {
      fail_fast(q, errc::transient,
                "no route from node '" + core_->node_name + "' to node '" + node
                    + "' (not connected, and no endpoint known for it)",
                "no_route");
      return;
    }
    if (!parse_host_port(endpoint, "endpoint")) {
      fail_fast(q, errc::validation, "'" + node + "' is not a valid \"@host:port\" address",
                "no_route");
      return;
    }
    auto& d = dialer_for(endpoint);
    switch (d.state) {
    case dial_state::up:
      if (auto* l = find_link(d.link); l != nullptr && l->state == link_state::up) {
        send_item(*l, std::move(q));
        return;
      }
      d.state = dial_state::idle;
      [[fallthrough]];
    case dial_state::idle:
      d.queue.push_back(std::move(q));
      dial(d);
      return;
    case dial_state::connecting:
    case dial_state::handshaking:
      if (d.queue.size() >= opts_.queue_limit) {
        fail_fast(q, errc::transient,
                  "node '" + node + "' is still connecting and " + std::to_string(d.queue.size())
                      + " envelopes wait for it (cluster.queue_limit)",
                  "queue_full");
        return;
      }
      d.queue.push_back(std::move(q));
      return;
    case dial_state::backoff:
      fail_fast(q, errc::transient,
                "node '" + node + "' at " + endpoint
                    + " is unreachable (reconnecting with "
                      "backoff after "
                    + std::to_string(d.failures) + " failed attempts)",
                "unreachable");
      return;
    }
  }

  std::string local_endpoint() const { return opts_.listen.host + ":" + std::to_string(port_); }

  /// An envelope for "@<this node's endpoint>": delivered by name here, as a peer would.
  void deliver_here(queued q) {
    const auto name = q.env.receiver().name;
    if (name == k_cluster_transport) {
      on_control(std::move(q.env), std::move(q.rp), q.ask);
      return;
    }
    auto target = core_->lookup(name);
    if (!target) {
      fail_fast(q, errc::not_found, target.error().message(), "not_found");
      return;
    }
    if (!q.ask) {
      send(to_actor(*target), std::move(q.env));
      return;
    }
    auto rp = std::move(q.rp);
    auto req = q.env;
    request(to_actor(*target), caf::infinite, std::move(q.env))
        .then([rp](envelope& reply) mutable { rp.deliver(std::move(reply)); },
              [this, rp, req](caf::error& err) mutable {
                rp.deliver(
                    error_reply(req, ask_error(err, req.receiver().to_string(), duration::max())));
              });
  }

  void send_item(link& l, queued q) {
    const std::string& bytes = q.env.encode();
    if (bytes.size() + k_item_overhead + k_batch_header > opts_.max_frame_bytes) {
      fail_fast(q, errc::validation,
                "envelope to " + q.env.receiver().to_string() + " is "
                    + std::to_string(bytes.size()) + " bytes, more than cluster.max_frame_bytes ("
                    + std::to_string(opts_.max_frame_bytes) + ")",
                "oversized");
      return;
    }
    std::uint64_t ask_id = 0;
    if (q.ask) {
      ask_id = ++next_ask_;
      asks_.emplace(ask_id, pending_ask{std::move(q.rp), q.env, l.id, now()});
    }
    append(l, q.ask ? item_kind::ask : item_kind::tell, ask_id, bytes);
  }

  void append(link& l, item_kind k, std::uint64_t ask_id, std::string_view body) {
    if (!l.out.empty() && l.out.size() + body.size() + k_item_overhead > opts_.max_frame_bytes)
      flush(l);
    if (l.out.empty()) {
      begin_frame(l.out, frame_type::batch);
      l.out.append(k_batch_header - 1, '\0'); // sequence number and MAC, set by flush
    }
    append_item(l.out, k, ask_id, body);
    ++l.out_items;
    // A frame this full goes out now, while the mailbox still holds more: it bounds the frame
    // (and the peer's read buffer) and how long an ask waits behind a burst of tells. (Its
    // effect on one-way throughput was within this machine's noise from 64 KiB up.)
    if (l.out.size() >= k_flush_bytes) {
      flush(l);
      return;
    }
    if (!l.dirty) {
      l.dirty = true;
      dirty_.push_back(l.id);
    }
  }

  /// Runs after every message that may have added items: sends the filled frames when the
  /// mailbox holds nothing more (the common case at low load: no extra message, no delay);
  /// otherwise the frames keep filling while the mailbox drains, bounded by one flush message
  /// queued behind what is there now (under load, many envelopes share one frame).
  void after_message() {
    if (dirty_.empty()) return;
    if (mailbox().empty()) {
      flush_dirty();
      return;
    }
    if (!flush_scheduled_) {
      flush_scheduled_ = true;
      send(this, flush_atom::value);
    }
  }

  void flush_dirty() {
    for (auto id : std::exchange(dirty_, {}))
      if (auto* l = find_link(id)) flush(*l);
  }

  void flush(link& l) {
    l.dirty = false;
    if (l.state != link_state::up || l.out.size() <= k_batch_header) return;
    count_envelopes("out", static_cast<double>(l.out_items));
    l.out_items = 0;
    std::string frame;
    frame.swap(l.out);
    const auto seq = ++l.out_seq;
    for (int i = 0; i < 8; ++i)
      frame[1 + i] = static_cast<char>((seq >> (8 * i)) & 0xff);
    const auto mac = frame_mac(l.key, l.outbound ? 'c' : 's', seq,
                               std::string_view{frame}.substr(k_batch_header));
    std::copy(mac.begin(), mac.end(), frame.begin() + 9);
    send_frame(l, frame);
    // The next frame fills the same buffer: no regrowth (and fresh pages) per frame of a burst.
    // A buffer an oversized envelope grew is let go.
    if (l.out.empty() && frame.capacity() <= k_keep_frame_buffer) {
      frame.clear();
      l.out.swap(frame);
    }
  }

  // --- dialling -------------------------------------------------------------------------------

  dialer& dialer_for(const std::string& endpoint) {
    auto [it, inserted] = dialers_.try_emplace(endpoint);
    if (inserted) {
      it->second.endpoint = endpoint;
      if (auto hp = parse_host_port(endpoint, "endpoint")) it->second.hp = *hp;
    }
    return it->second;
  }

  void dial(dialer& d) {
    d.state = dial_state::connecting;
    const auto token = ++next_dial_;
    dials_[token] = dial_attempt{d.endpoint, ++d.generation};
    io_->connect(token, d.hp.host, d.hp.port);
  }

  void on_connected(std::uint64_t token, std::uint64_t conn) {
    auto a = dials_.find(token);
    if (a == dials_.end()) {
      io_->close(conn);
      return;
    }
    auto attempt = std::move(a->second);
    dials_.erase(a);
    auto it = dialers_.find(attempt.endpoint);
    if (it == dialers_.end() || it->second.generation != attempt.generation
        || it->second.state != dial_state::connecting) {
      io_->close(conn); // a stale attempt (the dialer moved on)
      return;
    }
    auto& d = it->second;
    d.state = dial_state::handshaking;
    auto& l = new_link(conn, true);
    l.remote = d.endpoint;
    l.endpoint = d.endpoint;
    d.link = l.id;
    start_hello(l);
  }

  void start_hello(link& l) {
    auto nonce = make_nonce();
    if (!nonce) {
      core_->log.error("transport_nonce_failed", nonce.error().to_string());
      return;
    }
    l.state = link_state::hello_sent;
    l.since = now();
    l.my_nonce = *nonce;
    v1::TransportHello h;
    h.set_version(k_protocol_version);
    h.set_node(core_->node_name);
    h.set_nonce(l.my_nonce);
    h.set_endpoint(advertise_);
    for (const auto& [node, r] : routes_)
      if (r.endpoint == l.endpoint) h.set_target(node);
    l.expected = h.target();
    send_control(l, frame_type::hello, h);
  }

  duration backoff_delay(std::uint32_t failures) {
    // Exponential with "equal jitter": half the step fixed, half random, never zero.
    auto step = opts_.reconnect_base;
    for (std::uint32_t i = 1; i < failures && step < opts_.reconnect_cap; ++i)
      step *= 2;
    step = std::min(step, opts_.reconnect_cap);
    const auto half = step / 2;
    return half
           + duration{static_cast<std::int64_t>(rng_.uniform(
               static_cast<std::uint64_t>(std::max<std::int64_t>(half.count(), 0)) + 1))};
  }

  void fail_queue(dialer& d, const std::string& why) {
    while (!d.queue.empty()) {
      auto q = std::move(d.queue.front());
      d.queue.pop_front();
      fail_fast(q, errc::transient, why, "unreachable");
    }
  }

  void dial_failed(dialer& d, const std::string& why) {
    ++d.failures;
    count_event("dial_failed");
    const auto delay = backoff_delay(d.failures);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(delay).count();
    core_->log.warn("peer_dial_failed", "cannot reach " + d.endpoint + ": " + why,
                    {{"endpoint", d.endpoint}, {"attempt", d.failures}, {"retry_in_ms", ms}});
    fail_queue(d, "node at " + d.endpoint + " is unreachable: " + why);
    d.link = 0;
    // A member's route redials when the timer fires; a seed ("@host:port") only if envelopes
    // wait for it then. Until then asks fail fast.
    d.state = dial_state::backoff;
    const auto gen = ++d.generation;
    delayed_send(this, std::chrono::duration_cast<caf::timespan>(delay), redial_atom::value,
                 d.endpoint, gen);
  }

  void on_redial(const std::string& endpoint, std::uint64_t gen) {
    auto it = dialers_.find(endpoint);
    if (it == dialers_.end() || it->second.generation != gen) return;
    auto& d = it->second;
    if (d.state != dial_state::backoff) return;
    if (d.persistent || !d.queue.empty()) {
      count_event("reconnect_attempt");
      dial(d);
    } else {
      d.state = dial_state::idle;
    }
  }

  void dialer_up(dialer& d, link& l) {
    d.state = dial_state::up;
    d.failures = 0;
    while (!d.queue.empty()) {
      auto q = std::move(d.queue.front());
      d.queue.pop_front();
      send_item(l, std::move(q));
    }
  }

  // --- remote side: frames from peers ---------------------------------------------------------

  void on_frame(link& l, const std::string& bytes) {
    count_frames("in");
    if (bytes.empty()) {
      refuse(&l, refusal::malformed, "empty frame", true);
      return;
    }
    const auto type = static_cast<frame_type>(bytes[0]);
    const std::string_view body{bytes.data() + 1, bytes.size() - 1};
    switch (type) {
    case frame_type::hello:
      on_hello(l, body);
      return;
    case frame_type::challenge:
      on_challenge(l, body);
      return;
    case frame_type::proof:
      on_proof(l, body);
      return;
    case frame_type::welcome:
      on_welcome(l);
      return;
    case frame_type::refused:
      on_refused(l, body);
      return;
    case frame_type::goodbye:
      l.goodbye = true; // its close follows: a clean shutdown, not a lost peer
      return;
    case frame_type::batch:
      if (l.state != link_state::up) {
        refuse(&l, refusal::unauthenticated,
               "an envelope batch from a peer that has not authenticated", false);
        return;
      }
      on_batch(l, body);
      return;
    }
    refuse(&l, refusal::malformed,
           "unknown frame type " + std::to_string(static_cast<unsigned>(bytes[0])), true);
  }

  void on_hello(link& l, std::string_view body) {
    if (l.state == link_state::up) {
      refuse(&l, refusal::unexpected_hello, "a hello on an authenticated session", true);
      return;
    }
    if (l.state != link_state::awaiting_hello) {
      refuse(&l, refusal::malformed,
             "a hello out of turn (state " + std::string{to_string(l.state)} + ")", true);
      return;
    }
    v1::TransportHello h;
    if (!h.ParseFromArray(body.data(), static_cast<int>(body.size())) || h.node().empty()
        || h.nonce().size() != k_nonce_bytes || h.version() != k_protocol_version) {
      refuse(&l, refusal::malformed, "malformed hello", true);
      return;
    }
    l.node = h.node();
    l.peer_nonce = h.nonce();
    if (h.node() == core_->node_name) {
      refuse(&l, refusal::wrong_node, "a peer claims this node's own name '" + h.node() + "'",
             true);
      return;
    }
    if (!h.target().empty() && h.target() != core_->node_name) {
      refuse(&l, refusal::wrong_node,
             "peer '" + h.node() + "' expected node '" + h.target() + "' at this endpoint", true);
      return;
    }
    auto nonce = make_nonce();
    if (!nonce) return;
    l.my_nonce = *nonce;
    l.state = link_state::awaiting_proof;
    l.since = now();
    if (!h.endpoint().empty()) {
      l.endpoint = h.endpoint();
      if (!routes_.contains(h.node())) routes_[h.node()] = route{h.endpoint(), false};
    }
    v1::TransportChallenge c;
    c.set_node(core_->node_name);
    c.set_nonce(l.my_nonce);
    c.set_proof(handshake_proof(opts_.secret, proof_role::server, l.node, core_->node_name,
                                l.peer_nonce, l.my_nonce));
    c.set_endpoint(advertise_);
    send_control(l, frame_type::challenge, c);
  }

  void on_challenge(link& l, std::string_view body) {
    if (l.state != link_state::hello_sent) {
      refuse(&l, refusal::malformed, "a challenge without a hello", false);
      return;
    }
    v1::TransportChallenge c;
    if (!c.ParseFromArray(body.data(), static_cast<int>(body.size())) || c.node().empty()
        || c.nonce().size() != k_nonce_bytes) {
      refuse(&l, refusal::malformed, "malformed challenge", true);
      handshake_failed(l, "malformed challenge");
      return;
    }
    l.node = c.node();
    l.peer_nonce = c.nonce();
    const auto expected = handshake_proof(opts_.secret, proof_role::server, core_->node_name,
                                          c.node(), l.my_nonce, l.peer_nonce);
    if (!proofs_equal(expected, c.proof())) {
      refuse(&l, refusal::bad_proof,
             "peer '" + c.node() + "' at " + remote_of(l)
                 + " failed the handshake: it does not know the cluster secret",
             true);
      handshake_failed(l, "the peer failed the handshake (wrong cluster secret?)");
      return;
    }
    if (!l.expected.empty() && l.expected != c.node()) {
      refuse(&l, refusal::wrong_node,
             "expected node '" + l.expected + "' at " + l.endpoint + ", found '" + c.node() + "'",
             true);
      handshake_failed(l, "another node listens there");
      return;
    }
    if (!c.endpoint().empty() && !routes_.contains(c.node()))
      routes_[c.node()] = route{c.endpoint(), false};
    v1::TransportProof p;
    p.set_proof(handshake_proof(opts_.secret, proof_role::client, core_->node_name, c.node(),
                                l.my_nonce, l.peer_nonce));
    l.key = session_key(opts_.secret, core_->node_name, c.node(), l.my_nonce, l.peer_nonce);
    l.state = link_state::awaiting_welcome;
    l.since = now();
    send_control(l, frame_type::proof, p);
  }

  void on_proof(link& l, std::string_view body) {
    if (l.state != link_state::awaiting_proof) {
      refuse(&l, refusal::malformed, "a proof without a challenge", false);
      return;
    }
    v1::TransportProof p;
    const auto expected = handshake_proof(opts_.secret, proof_role::client, l.node,
                                          core_->node_name, l.peer_nonce, l.my_nonce);
    if (!p.ParseFromArray(body.data(), static_cast<int>(body.size()))
        || !proofs_equal(expected, p.proof())) {
      refuse(&l, refusal::bad_proof,
             "peer '" + l.node + "' at " + remote_of(l)
                 + " failed the handshake: it does not know the cluster secret",
             true);
      return;
    }
    l.key = session_key(opts_.secret, l.node, core_->node_name, l.peer_nonce, l.my_nonce);
    send_control(l, frame_type::welcome, v1::TransportWelcome{});
    link_up(l);
  }

  void on_welcome(link& l) {
    if (l.state != link_state::awaiting_welcome) {
      refuse(&l, refusal::malformed, "a welcome without a proof", false);
      return;
    }
    link_up(l);
  }

  void on_refused(link& l, std::string_view body) {
    v1::TransportRefused r;
    (void)r.ParseFromArray(body.data(), static_cast<int>(body.size()));
    if (l.state == link_state::refused) return;
    const bool handshaking = l.state == link_state::hello_sent
                             || l.state == link_state::awaiting_welcome
                             || l.state == link_state::awaiting_proof;
    core_->log.warn("peer_refused_us", "peer refused this node: " + r.message(),
                    {{"reason", r.reason()}, {"remote", remote_of(l)}, {"peer", l.node}});
    if (l.state == link_state::awaiting_proof) {
      // The dialler found this node's proof wrong: it holds another secret.
      count_refused(refusal::handshake_failed);
      core_->log.warn("peer_refused",
                      "peer '" + l.node + "' at " + remote_of(l)
                          + " abandoned the handshake: " + r.message(),
                      {{"reason", std::string{refusal::handshake_failed}},
                       {"remote", remote_of(l)},
                       {"peer", l.node}});
    }
    const auto outbound = l.outbound;
    link_lost(l, "the peer refused this node: " + r.reason(), true);
    l.state = link_state::refused;
    io_->close(l.id);
    if (outbound && handshaking) handshake_failed(l, "refused by the peer: " + r.message());
  }

  /// The dialler's side of a handshake that failed: its dialer backs off.
  void handshake_failed(link& l, const std::string& why) {
    for (auto& [ep, d] : dialers_)
      if (d.link == l.id && d.state != dial_state::up) dial_failed(d, why);
  }

  void link_up(link& l) {
    l.state = link_state::up;
    l.out_seq = 0;
    l.in_seq = 0;
    l.since = now();
    l.tokens = opts_.peer_rate;
    l.refilled = l.since;
    // A second connection to the same node (both dialled at once, or the peer restarted before
    // its old connection was seen closed) does not drop the first: both stay usable, envelopes
    // go out on the newest (after a restart the old one may be half-open and never answer),
    // replies on the connection their ask came through. Envelopes sent just before the switch
    // may be overtaken by later ones on the new connection.
    by_node_[l.node] = l.id;
    const bool again = seen_.contains(l.node);
    seen_.insert(l.node);
    count_event(again ? "reconnected" : "connected");
    core_->log.info(again ? "peer_reconnected" : "peer_connected",
                    "authenticated cluster peer '" + l.node + "'",
                    {{"peer", l.node},
                     {"remote", remote_of(l)},
                     {"direction", l.outbound ? "out" : "in"},
                     {"endpoint", l.endpoint}});
    update_peers_gauge();
    for (auto& [ep, d] : dialers_) {
      const bool mine = d.link == l.id || (!l.endpoint.empty() && ep == l.endpoint);
      if (mine && d.state != dial_state::up) {
        d.link = l.id;
        dialer_up(d, l);
      }
    }
  }

  /// Tells this node's membership agent (when there is one) that the connection to `node` was
  /// lost, so it probes that member now rather than at its turn (detection in milliseconds
  /// after a crash instead of up to n-1 periods).
  void hint_peer_lost(const std::string& node, const std::string& why) {
    auto members = core_->registry.find("af.cluster.members");
    if (!members) return;
    auto lost = std::make_shared<v1::PeerLost>();
    lost->set_node(node);
    lost->set_reason(why);
    auto env = core_->make_envelope({core_->node_name, std::string{k_cluster_transport}},
                                    {core_->node_name, "af.cluster.members"}, std::move(lost),
                                    nullptr, 0, core_->default_tenant, rng_);
    send(caf::actor_cast<envelope_actor>(members), std::move(env));
  }

  /// The link stops carrying envelopes: asks through it fail, dialers back off or redial.
  /// Another authenticated link to `node` than `except`, if there is one.
  link* other_up_link(const std::string& node, std::uint64_t except) {
    for (auto& [id, l] : links_)
      if (id != except && l.state == link_state::up && l.node == node) return &l;
    return nullptr;
  }

  void link_lost(link& l, const std::string& why, bool log_it) {
    const bool was_up = l.state == link_state::up;
    l.out.clear();
    l.out_items = 0;
    l.state = link_state::refused;
    auto* other = l.node.empty() ? nullptr : other_up_link(l.node, l.id);
    if (auto it = by_node_.find(l.node); it != by_node_.end() && it->second == l.id) {
      if (other != nullptr)
        it->second = other->id;
      else
        by_node_.erase(it);
      update_peers_gauge();
    }
    std::vector<std::uint64_t> failed;
    for (auto& [id, p] : asks_)
      if (p.link == l.id) failed.push_back(id);
    for (auto id : failed) {
      auto& p = asks_.at(id);
      p.rp.deliver(error_reply(
          p.request, {errc::transient, "connection to node '" + l.node + "' lost: " + why}));
      asks_.erase(id);
    }
    // The node is still connected through another link: nothing is lost but one connection.
    if (was_up && other != nullptr) {
      for (auto& [ep, d] : dialers_)
        if (d.link == l.id) d.link = other->id;
      return;
    }
    if (was_up) {
      count_event("disconnected");
      // A peer that shut down cleanly is news; a lost connection or a refusal is a warning.
      if (log_it)
        core_->log.log(
            clean_exit_ ? log_level::info : log_level::warn, "peer_disconnected",
            "cluster peer '" + l.node + "' disconnected: " + why,
            {{"peer", l.node}, {"remote", remote_of(l)}, {"failed_asks", failed.size()}});
    }
    // A connection reset or closed without a goodbye: membership probes the node at once.
    if (was_up && !clean_exit_ && !l.node.empty()) hint_peer_lost(l.node, why);
    for (auto& [ep, d] : dialers_) {
      // Dialers still handshaking keep the link: handshake_failed settles them.
      if (d.link != l.id || d.state != dial_state::up) continue;
      d.link = 0;
      {
        d.state = dial_state::idle;
        if (d.persistent) {
          d.state = dial_state::backoff;
          const auto gen = ++d.generation;
          d.failures = std::max<std::uint32_t>(d.failures, 1);
          delayed_send(this, std::chrono::duration_cast<caf::timespan>(backoff_delay(d.failures)),
                       redial_atom::value, d.endpoint, gen);
        }
      }
    }
    // An inbound-only peer with a member route: dial it back.
    if (was_up && !l.node.empty()) {
      if (auto r = routes_.find(l.node); r != routes_.end() && r->second.persistent) {
        auto& d = dialer_for(r->second.endpoint);
        if (d.state == dial_state::idle) {
          d.state = dial_state::backoff;
          const auto gen = ++d.generation;
          delayed_send(this, std::chrono::duration_cast<caf::timespan>(backoff_delay(1)),
                       redial_atom::value, d.endpoint, gen);
        }
      }
    }
  }

  /// The I/O thread reports connection `conn` gone (closed by the peer, reset, or closed here).
  void on_closed(std::uint64_t conn, const std::string& why) {
    auto* l = find_link(conn);
    if (l == nullptr) return;
    const bool handshaking =
        l->state == link_state::hello_sent || l->state == link_state::awaiting_welcome;
    if (l->state != link_state::refused) {
      clean_exit_ = l->goodbye;
      link_lost(*l,
                "connection closed (" + std::string{l->goodbye ? "the peer shut down" : why} + ")",
                true);
      clean_exit_ = false;
    }
    // A dialler whose connection ends before its session is up backs off (also when the link
    // was refused here first: its dialer must not wait for a handshake that cannot finish).
    if (l->outbound)
      handshake_failed(*l, handshaking ? "connection closed during the handshake"
                                       : "connection closed: " + why);
    links_.erase(conn);
  }

  bool take_token(link& l) {
    if (opts_.peer_rate <= 0) return true;
    const auto t = now();
    const double secs = std::chrono::duration<double>(t - l.refilled).count();
    l.refilled = t;
    l.tokens = std::min(opts_.peer_rate, l.tokens + secs * opts_.peer_rate);
    if (l.tokens < 1) return false;
    l.tokens -= 1;
    return true;
  }

  void on_batch(link& l, std::string_view frame) {
    if (frame.size() < k_batch_header - 1) {
      refuse(&l, refusal::malformed, "batch frame shorter than its header", true);
      return;
    }
    std::uint64_t seq = 0;
    for (int i = 0; i < 8; ++i)
      seq |= static_cast<std::uint64_t>(static_cast<unsigned char>(frame[i])) << (8 * i);
    const auto mac = frame.substr(8, k_mac_bytes);
    const auto body = frame.substr(k_batch_header - 1);
    if (!proofs_equal(mac, frame_mac(l.key, l.outbound ? 's' : 'c', seq, body))) {
      refuse(&l, refusal::bad_mac,
             "batch frame with a wrong MAC on the session with '" + l.node
                 + "' (forged or corrupted)",
             true);
      return;
    }
    if (seq != l.in_seq + 1) {
      refuse(&l, refusal::bad_sequence,
             "batch frame " + std::to_string(seq) + " where " + std::to_string(l.in_seq + 1)
                 + " was due (replayed or reordered)",
             true);
      return;
    }
    l.in_seq = seq;
    auto& items = batch_items_; // reused: no list allocated per frame
    if (auto st = parse_batch(body, items); !st) {
      items.clear();
      refuse(&l, refusal::malformed, "garbage batch: " + st.error().message(), true);
      return;
    }
    const auto id = l.id;
    count_envelopes("in", static_cast<double>(items.size()));
    // Names are resolved once per batch (a batch usually carries many envelopes for one agent).
    batch_targets_.clear();
    for (const auto& it : items) {
      auto* lk = find_link(id);
      if (lk == nullptr || lk->state != link_state::up) break;
      switch (it.kind) {
      case item_kind::tell:
        deliver_in(*lk, it);
        break;
      case item_kind::ask:
        hand_over(); // what came before it in the frame reaches its agent before it
        deliver_in(*lk, it);
        break;
      case item_kind::reply:
      case item_kind::fail:
        hand_over();
        settle_ask(*lk, it);
        break;
      }
    }
    hand_over();
    batch_targets_.clear();
    items.clear(); // views into this frame
  }

  /// Sends the held tells to their agent host: one CAF message for several (envelope_batch),
  /// the envelope itself for one. Called before anything else is sent to an actor from a batch
  /// frame, so every actor still gets what a frame carries for it in the frame's order.
  void hand_over() {
    if (held_.empty()) return;
    if (held_.size() == 1)
      send(held_for_, std::move(held_.front()));
    else
      send(caf::actor_cast<caf::actor>(held_for_), envelope_batch{std::move(held_)});
    held_.clear();
    held_for_ = envelope_actor{};
  }

  void fail_back(link& l, std::uint64_t ask_id, const error& e) {
    std::string body{to_string(e.code())};
    body += '\n';
    body += e.message();
    append(l, item_kind::fail, ask_id, body);
  }

  void deliver_in(link& l, const batch_item& it) {
    const bool ask = it.kind == item_kind::ask;
    if (!take_token(l)) {
      count_dropped("rate_limited");
      if (++l.rate_drops <= 10 || l.rate_drops % 1000 == 0)
        core_->log.warn("peer_rate_limited",
                        "peer '" + l.node + "' exceeds cluster.peer_rate; envelope dropped",
                        {{"peer", l.node}, {"dropped", l.rate_drops}});
      if (ask)
        fail_back(l, it.ask_id,
                  {errc::quota, "node '" + core_->node_name + "' limits peer '" + l.node + "' to "
                                    + std::to_string(static_cast<std::uint64_t>(opts_.peer_rate))
                                    + " envelopes/s (cluster.peer_rate)"});
      return;
    }
    auto env = envelope::decode(it.body, core_->decode);
    if (!env) {
      core_->metrics->envelope_rejected(reject_reason::malformed).inc();
      core_->log.warn("envelope_rejected", env.error().to_string(),
                      {{"reason", "malformed"}, {"peer", l.node}});
      if (ask) fail_back(l, it.ask_id, env.error());
      return;
    }
    const auto& to = env->receiver();
    if (!to.node.empty() && to.node != core_->node_name && !to.node.starts_with('@')) {
      count_dropped("wrong_node");
      if (ask)
        fail_back(l, it.ask_id,
                  {errc::not_found,
                   "envelope for node '" + to.node + "' reached node '" + core_->node_name + "'"});
      return;
    }
    if (to.name == k_cluster_transport) {
      if (const auto* pr = env->payload_as<v1::PeerRoutes>()) apply_routes(*pr);
      if (ask) {
        auto reply = core_->make_reply({core_->node_name, to.name}, *env, empty_payload(), rng_);
        append(l, item_kind::reply, it.ask_id, reply.encode());
      }
      return;
    }
    auto cached = batch_targets_.find(to.name);
    if (cached == batch_targets_.end()) {
      auto target = core_->lookup(to.name);
      if (!target) {
        count_dropped("not_found");
        if (ask)
          fail_back(l, it.ask_id, target.error());
        else
          core_->log.debug("envelope_dropped", target.error().message(),
                           {{"reason", "not_found"}, {"peer", l.node}});
        return;
      }
      auto actor = to_actor(*target);
      const bool host = dynamic_cast<agent_host*>(ctrl_of(actor)->get()) != nullptr;
      cached = batch_targets_.emplace(to.name, batch_target{std::move(actor), host}).first;
    }
    const auto& actor = cached->second.actor;
    if (!ask) {
      if (!cached->second.host) {
        hand_over();
        send(actor, std::move(*env));
        return;
      }
      if (held_for_ != actor) hand_over();
      held_for_ = actor;
      // Sized once for the rest of the frame (a batch mostly carries envelopes for one agent)
      // instead of growing 1, 2, 4, ... 64: the vector leaves with the hand-over either way.
      if (held_.empty()) held_.reserve(batch_items_.size());
      held_.push_back(std::move(*env));
      return;
    }
    const auto link_id = l.id;
    const auto ask_id = it.ask_id;
    const auto target_name = to.to_string();
    request(actor, caf::infinite, std::move(*env))
        .then(
            [this, link_id, ask_id](envelope& reply) {
              auto* lk = find_link(link_id);
              if (lk == nullptr || lk->state != link_state::up) return;
              append(*lk, item_kind::reply, ask_id, reply.encode());
              after_message();
            },
            [this, link_id, ask_id, target_name](caf::error& err) {
              auto* lk = find_link(link_id);
              if (lk == nullptr || lk->state != link_state::up) return;
              fail_back(*lk, ask_id, ask_error(err, target_name, duration::max()));
              after_message();
            });
  }

  void settle_ask(link& l, const batch_item& it) {
    auto p = asks_.find(it.ask_id);
    if (p == asks_.end() || p->second.link != l.id) return; // forgotten, or not this peer's
    auto rp = std::move(p->second.rp);
    auto request_env = std::move(p->second.request);
    asks_.erase(p);
    if (it.kind == item_kind::reply) {
      auto env = envelope::decode(it.body, core_->decode);
      if (!env) {
        core_->metrics->envelope_rejected(reject_reason::malformed).inc();
        rp.deliver(error_reply(request_env, env.error()));
        return;
      }
      rp.deliver(std::move(*env));
      return;
    }
    const auto nl = it.body.find('\n');
    errc code = errc::internal;
    std::string msg{it.body};
    if (nl != std::string_view::npos) {
      if (!from_string(std::string{it.body.substr(0, nl)}, code)) code = errc::internal;
      msg = std::string{it.body.substr(nl + 1)};
    }
    rp.deliver(error_reply(request_env, {code, msg}));
  }

  void sweep() {
    const auto t = now();
    std::vector<std::uint64_t> late;
    for (auto& [id, l] : links_) {
      const bool handshaking =
          l.state == link_state::awaiting_hello || l.state == link_state::hello_sent
          || l.state == link_state::awaiting_proof || l.state == link_state::awaiting_welcome;
      if (handshaking && t - l.since > opts_.handshake_timeout) late.push_back(id);
    }
    for (auto id : late) {
      auto* l = find_link(id);
      if (l == nullptr) continue;
      const bool outbound = l->outbound;
      refuse(l, refusal::handshake_timeout,
             "handshake with " + remote_of(*l) + " did not complete within "
                 + std::to_string(
                     std::chrono::duration_cast<std::chrono::milliseconds>(opts_.handshake_timeout)
                         .count())
                 + " ms",
             true);
      if (outbound) handshake_failed(*l, "handshake timed out");
    }
    std::vector<std::uint64_t> stale;
    for (auto& [id, p] : asks_)
      if (t - p.at > k_pending_ask_ttl) stale.push_back(id);
    for (auto id : stale) {
      auto& p = asks_.at(id);
      p.rp.deliver(error_reply(p.request, {errc::timeout, "no reply from the remote node"}));
      asks_.erase(id);
    }
  }

  node_core* core_;
  transport_options opts_;
  std::shared_ptr<transport_status> status_;
  af::rng rng_;
  std::unique_ptr<transport_io> io_;
  std::uint16_t port_ = 0;
  std::string advertise_;
  std::unordered_map<std::uint64_t, link> links_;
  std::unordered_map<std::string, std::uint64_t> by_node_;
  std::unordered_map<std::string, dialer> dialers_;
  std::unordered_map<std::string, route> routes_;
  std::unordered_map<std::uint64_t, pending_ask> asks_;
  std::set<std::string> seen_;
  std::unordered_map<std::uint64_t, dial_attempt> dials_; ///< connects under way, by token
  std::uint64_t next_dial_ = 0;
  std::vector<std::uint64_t> dirty_; ///< links whose batch frame holds unsent items
  bool flush_scheduled_ = false;
  std::uint64_t next_ask_ = 0;
  std::unordered_map<std::string, counter_handle> counters_;
  struct batch_target {
    envelope_actor actor;
    bool host = false; ///< a local agent host: its tells can share one CAF message
  };
  std::unordered_map<std::string, batch_target> batch_targets_;
  /// The items of the batch frame being delivered (views into it); kept for its capacity.
  std::vector<batch_item> batch_items_;
  /// Tells of the batch being read for one agent host, not yet sent (see hand_over).
  envelope_actor held_for_;
  std::vector<envelope> held_;
  bool clean_exit_ = false; ///< the link being lost went down with a clean exit reason
  gauge_handle peers_gauge_;
};

} // namespace

expected<std::optional<transport_options>> transport_options_from(const config& cfg) {
  const auto listen = cfg.get_string("cluster.listen");
  if (listen.empty()) return std::optional<transport_options>{};
  transport_options o;
  auto hp = parse_host_port(listen, "cluster.listen");
  if (!hp) return hp.error();
  o.listen = *hp;
  o.advertise = cfg.get_string("cluster.advertise");
  auto secret = read_cluster_secret(cfg.get_string("cluster.secret_file"));
  if (!secret) return secret.error();
  o.secret = std::move(*secret);
  const auto cert = cfg.get_string("cluster.tls_cert");
  const auto key = cfg.get_string("cluster.tls_key");
  const auto ca = cfg.get_string("cluster.tls_ca");
  if (auto r = check_tls_files(cert, key, ca); !r) return r.error();
  o.tls = !cert.empty();
  o.tls_cert = cert;
  o.tls_key = key;
  o.tls_ca = ca;
  o.max_frame_bytes = static_cast<std::size_t>(cfg.get_int("cluster.max_frame_bytes"));
  o.peer_rate = static_cast<double>(cfg.get_int("cluster.peer_rate"));
  o.queue_limit = static_cast<std::size_t>(cfg.get_int("cluster.queue_limit"));
  o.reconnect_base = std::chrono::milliseconds(cfg.get_int("cluster.reconnect_base_ms"));
  o.reconnect_cap = std::chrono::milliseconds(cfg.get_int("cluster.reconnect_cap_ms"));
  o.handshake_timeout = std::chrono::milliseconds(cfg.get_int("cluster.handshake_timeout_ms"));
  return std::optional<transport_options>{std::move(o)};
}

sup::child_spec transport_child(node_core& core, transport_options opts,
                                std::shared_ptr<transport_status> status) {
  auto* c = &core;
  auto make = [c, opts = std::move(opts),
               status = std::move(status)](caf::actor_system& sys) -> expected<caf::actor> {
    const std::string name{k_cluster_transport};
    if (auto r = c->registry.reserve(name, name); !r) return r.error();
    auto a = sys.spawn<transport_actor>(c, opts, status);
    c->registry.bind(name, caf::actor_cast<caf::strong_actor_ptr>(a));
    a->attach_functor([c, name, ptr = caf::actor_cast<caf::actor_control_block*>(a)] {
      c->registry.erase(name, ptr);
    });
    return a;
  };
  auto spec = sup::actor_child(std::string{k_cluster_transport}, std::move(make),
                               std::string{k_cluster_transport});
  spec.system = true;
  return spec;
}

} // namespace af::detail
