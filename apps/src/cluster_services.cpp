// The cluster's system services of a node started with cluster.listen: SWIM membership
// (af.cluster.members) and the virtual-agent router (af.cluster.placement) with the built-in
// event-sourced kind `counter`, configured from the cluster.* keys (docs/cluster.md).
#include "af/cluster/counter.hpp"
#include "af/cluster/membership.hpp"
#include "af/cluster/placement.hpp"
#include "af/host_port.hpp"
#include "commands.hpp"

#include <sstream>

namespace af::cli::detail {

namespace {

std::chrono::milliseconds ms(const config& cfg, std::string_view key) {
  return std::chrono::milliseconds{cfg.get_int(key)};
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

} // namespace

expected<std::vector<sup::child_spec>> cluster_services(const config& cfg) {
  std::vector<sup::child_spec> out;
  const auto& join = cfg.get_string("cluster.join");
  if (cfg.get_string("cluster.listen").empty()) {
    if (!join.empty())
      return validation_error("cluster.join (" + cfg.origin("cluster.join")
                              + ") needs cluster.listen: a node joins a cluster through its "
                                "cluster transport");
    return out;
  }
  cluster::swim_options so;
  so.period = ms(cfg, "cluster.swim.period_ms");
  so.ping_timeout = cfg.get_int("cluster.swim.ping_timeout_ms") > 0
                        ? duration{ms(cfg, "cluster.swim.ping_timeout_ms")}
                        : so.period * 3 / 10;
  so.indirect_probes = static_cast<std::uint32_t>(cfg.get_int("cluster.swim.indirect_probes"));
  so.suspicion_mult = static_cast<double>(cfg.get_int("cluster.swim.suspicion_mult"));
  so.suspicion_min = cfg.get_int("cluster.swim.suspicion_min_ms") > 0
                         ? duration{ms(cfg, "cluster.swim.suspicion_min_ms")}
                         : so.period * 2;
  so.advertise = cfg.get_string("cluster.advertise");
  std::stringstream seeds{join};
  for (std::string s; std::getline(seeds, s, ',');) {
    s = trim(s);
    if (s.empty()) continue;
    auto hp = parse_host_port(s, "cluster.join");
    if (!hp) return hp.error();
    so.seeds.push_back("@" + s);
  }
  if (auto st = cluster::validate(so); !st)
    return validation_error("cluster.swim (" + cfg.origin("cluster.swim.period_ms")
                            + "): " + st.error().message());
  out.push_back(cluster::membership_child(std::move(so)));

  cluster::placement_options po;
  po.idle_timeout = ms(cfg, "cluster.placement.idle_timeout_ms");
  po.suspects_keep_ownership =
      cfg.get_string("cluster.placement.suspects_keep_ownership") == "true";
  po.kinds.emplace("counter", cluster::counter_kind());
  out.push_back(cluster::placement_child(std::move(po)));
  return out;
}

} // namespace af::cli::detail
