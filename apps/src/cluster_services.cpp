// The cluster's system services of a node started with cluster.listen: SWIM membership
// (af.cluster.members), the Raft metadata store (af.cluster.raft, with cluster.raft.members),
// the virtual-agent router (af.cluster.placement) with the built-in event-sourced kind
// `counter`, and the ownership settings of af.exec (leases and takeover with Raft and a shared
// store), configured from the cluster.* keys (docs/cluster.md, docs/consensus.md).
#include "af/cluster/counter.hpp"
#include "af/cluster/membership.hpp"
#include "af/cluster/placement.hpp"
#include "af/cluster/raft.hpp"
#include "af/cluster/singleton.hpp"
#include "af/host_port.hpp"
#include "af/store/journal.hpp"
#include "commands.hpp"

#include <algorithm>
#include <cctype>

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

/// cluster.raft.members as a list: node names, trimmed, without duplicates.
expected<std::vector<std::string>> raft_members(const config& cfg) {
  std::vector<std::string> out;
  std::stringstream list{cfg.get_string("cluster.raft.members")};
  for (std::string s; std::getline(list, s, ',');) {
    s = trim(s);
    if (s.empty()) continue;
    const bool ok = s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
                      return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'
                             || c == '.' || c == '-';
                    });
    if (!ok)
      return validation_error("cluster.raft.members (" + cfg.origin("cluster.raft.members") + "): '"
                              + s + "' is not a node name (1 to 64 of [A-Za-z0-9_.-])");
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(std::move(s));
  }
  return out;
}

/// The lease timings of cluster.exec.* (execution and singleton leases).
struct lease_timing {
  duration ttl{}, margin{}, renew_every{}, ask_timeout{};
};

lease_timing lease_timing_of(const config& cfg) {
  lease_timing t;
  t.ttl = ms(cfg, "cluster.exec.lease_ttl_ms");
  t.margin = cfg.get_int("cluster.exec.margin_ms") > 0 ? duration{ms(cfg, "cluster.exec.margin_ms")}
                                                       : t.ttl / 5;
  t.renew_every = cfg.get_int("cluster.exec.renew_ms") > 0
                      ? duration{ms(cfg, "cluster.exec.renew_ms")}
                      : (t.ttl - t.margin) / 3;
  // A request to Raft may wait for an election; a renewal must still come back before the
  // next one is due.
  t.ask_timeout = std::min<duration>(t.renew_every, std::chrono::seconds(5));
  return t;
}

} // namespace

expected<plan::exec_ownership> exec_ownership_from(const config& cfg) {
  plan::exec_ownership o;
  auto members = raft_members(cfg);
  if (!members) return members.error();
  // Takeover needs both: a lease authority every node agrees on (Raft), and a journal every
  // node reads (a dead node's executions must be in the taker's store).
  const bool shared = store::store_url(cfg).starts_with("postgres");
  if (members->empty() || !shared || cfg.get_string("cluster.exec.takeover") == "off"
      || cfg.get_string("cluster.listen").empty())
    return o;
  o.enabled = true;
  o.owner = cfg.get_string("node.name");
  const auto t = lease_timing_of(cfg);
  o.lease_ttl = t.ttl;
  o.margin = t.margin;
  o.renew_every = t.renew_every;
  o.ask_timeout = t.ask_timeout;
  o.scan_every = ms(cfg, "cluster.exec.scan_ms");
  if (auto st = plan::validate(o); !st)
    return validation_error("cluster.exec (" + cfg.origin("cluster.exec.lease_ttl_ms")
                            + "): " + st.error().message());
  return o;
}

expected<std::optional<sup::child_spec>> singletons_service(const config& cfg,
                                                            const plan::agent_types& agents) {
  const auto where = "cluster.singletons (" + cfg.origin("cluster.singletons") + ")";
  cluster::singleton_options so;
  std::stringstream names{cfg.get_string("cluster.singletons")};
  for (std::string s; std::getline(names, s, ',');) {
    s = trim(s);
    if (s.empty()) continue;
    const auto* t = agents.find(s);
    if (t == nullptr) {
      std::string known;
      for (const auto& n : agents.names())
        known += (known.empty() ? "" : ", ") + n;
      return validation_error(where + ": no agent type '" + s + "' is registered (registered: "
                              + known + ")");
    }
    so.singletons[s] = {t->factory, t->detached};
  }
  if (so.singletons.empty()) return std::optional<sup::child_spec>{};
  auto members = raft_members(cfg);
  if (!members) return members.error();
  if (members->empty())
    return validation_error(where + " needs cluster.raft.members: a singleton's lease is kept "
                                    "by the Raft group");
  so.owner = cfg.get_string("node.name");
  const auto t = lease_timing_of(cfg);
  so.lease_ttl = t.ttl;
  so.margin = t.margin;
  so.renew_every = t.renew_every;
  so.ask_timeout = t.ask_timeout;
  if (auto st = cluster::validate(so); !st) return validation_error(where + ": " + st.error().message());
  return std::optional{cluster::singletons_child(std::move(so))};
}

expected<std::vector<sup::child_spec>> cluster_services(const config& cfg) {
  std::vector<sup::child_spec> out;
  const auto& join = cfg.get_string("cluster.join");
  if (cfg.get_string("cluster.listen").empty()) {
    if (!join.empty())
      return validation_error("cluster.join (" + cfg.origin("cluster.join")
                              + ") needs cluster.listen: a node joins a cluster through its "
                                "cluster transport");
    if (!cfg.get_string("cluster.raft.members").empty())
      return validation_error("cluster.raft.members (" + cfg.origin("cluster.raft.members")
                              + ") needs cluster.listen: Raft members talk through the cluster "
                                "transport");
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

  auto members = raft_members(cfg);
  if (!members) return members.error();
  if (!members->empty()) {
    const auto& self = cfg.get_string("node.name");
    if (std::find(members->begin(), members->end(), self) == members->end())
      return validation_error("cluster.raft.members (" + cfg.origin("cluster.raft.members")
                              + ") does not name this node ('" + self
                              + "', node.name): every member of the Raft group runs it");
    cluster::raft_options ro;
    ro.members = *members;
    ro.election_timeout_min = ms(cfg, "cluster.raft.election_timeout_ms");
    ro.election_timeout_max = ro.election_timeout_min * 2;
    ro.heartbeat = ms(cfg, "cluster.raft.heartbeat_ms");
    ro.snapshot_every = static_cast<std::uint64_t>(cfg.get_int("cluster.raft.snapshot_every"));
    if (auto st = cluster::validate(ro); !st)
      return validation_error("cluster.raft (" + cfg.origin("cluster.raft.members")
                              + "): " + st.error().message());
    out.push_back(cluster::raft_child(std::move(ro)));
  }

  cluster::placement_options po;
  po.idle_timeout = ms(cfg, "cluster.placement.idle_timeout_ms");
  po.suspects_keep_ownership =
      cfg.get_string("cluster.placement.suspects_keep_ownership") == "true";
  po.kinds.emplace("counter", cluster::counter_kind());
  out.push_back(cluster::placement_child(std::move(po)));
  return out;
}

} // namespace af::cli::detail
