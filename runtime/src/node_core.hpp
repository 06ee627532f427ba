// Private: what every agent host shares with its node: services, registry, metrics, logger and
// limits. Owned by af::node, which outlives every actor it spawns.
#pragma once

#include "af/agent.hpp"
#include "af/envelope.hpp"
#include "af/log.hpp"
#include "af/metrics.hpp"
#include "af/services.hpp"
#include "registry.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>

namespace af {
class node;
}

namespace af::detail {

class agent_host;

struct node_core {
  std::string node_name;
  std::string default_tenant = "default";
  services svc;
  logger log;
  af::metrics* metrics = nullptr;
  name_registry registry;
  duration ask_timeout = std::chrono::seconds(5);
  decode_options decode;
  caf::actor_system* sys = nullptr;
  af::node* owner = nullptr;

  /// Spawns an agent host for `a`, registered as `name`; `parent` (may be null) stops it on exit.
  /// Names starting with "af." are reserved for the node's own agents (`system`).
  expected<agent_ref> spawn(std::unique_ptr<agent> a, std::string name, std::string tenant,
                            agent_host* parent, bool system = false);
  [[nodiscard]] expected<agent_ref> lookup(std::string_view name) const;

  /// A new envelope from `from` to `to`, continuing the trace of `cause` when there is one.
  envelope make_envelope(const address& from, const address& to,
                         std::shared_ptr<const google::protobuf::Message> payload,
                         const envelope* cause, std::uint64_t lamport, const std::string& tenant,
                         af::rng& r);
  /// The reply to `request`.
  envelope make_reply(const address& from, const envelope& request,
                      std::shared_ptr<const google::protobuf::Message> payload, af::rng& r);
};

} // namespace af::detail
