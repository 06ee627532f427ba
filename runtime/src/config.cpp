// Loads af::config: the schema table, value parsing and the four layers (defaults, YAML file,
// AF_* environment, command-line flags). yaml-cpp stays inside this file.
#include "af/config.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

namespace af {

namespace {

enum class kind : unsigned char { string, integer, uint64, enumeration, host_port };

/// One schema row. Adding a key is adding a row to `k_schema`.
struct key_spec {
  std::string_view key;
  kind type = kind::string;
  std::string_view default_value;
  std::string_view description;
  std::int64_t min = 0;                      // integer only
  std::int64_t max = 0;                      // integer only
  std::string_view choices = {};             // enumeration only: "a|b|c"
  bool (*valid)(std::string_view) = nullptr; // extra check for strings
  std::string_view expectation = {};         // what `valid` accepts, for error messages
};

bool valid_node_name(std::string_view v) {
  return !v.empty() && v.size() <= 64 && std::all_of(v.begin(), v.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
  });
}

constexpr std::array k_schema{
    key_spec{.key = "node.name",
             .default_value = "af-node",
             .description = "Name of this node in logs, metrics and the cluster",
             .valid = &valid_node_name,
             .expectation = "1 to 64 characters from [A-Za-z0-9_.-]"},
    key_spec{.key = "node.data_dir",
             .default_value = "data",
             .description = "Directory for the node's durable state (created by af node start)"},
    key_spec{
        .key = "node.listen",
        .type = kind::host_port,
        .default_value = "",
        .description =
            "host:port of the control endpoint (af node status, af demo --connect); empty: none"},
    key_spec{.key = "metrics.listen",
             .type = kind::host_port,
             .default_value = "",
             .description = "host:port of the Prometheus endpoint; empty: no endpoint"},
    key_spec{.key = "scheduler.policy",
             .type = kind::enumeration,
             .default_value = "stealing",
             .description = "Actor scheduler: work stealing or work sharing",
             .choices = "stealing|sharing"},
    key_spec{.key = "scheduler.threads",
             .type = kind::integer,
             .default_value = "2",
             .description = "Worker threads of the actor scheduler",
             .min = 1,
             .max = 64},
    key_spec{.key = "scheduler.idle_polls",
             .type = kind::integer,
             .default_value = "20",
             .description = "Work stealing: polls of an idle worker between its busy polls and its "
                            "sleep on a wake-up signal (CAF's default 500)",
             .min = 0,
             .max = 100000},
    key_spec{.key = "scheduler.idle_poll_sleep_us",
             .type = kind::integer,
             .default_value = "0",
             .description = "Work stealing: microseconds an idle worker sleeps between those polls "
                            "(CAF's default 50; a sleeping worker is not woken by new work)",
             .min = 0,
             .max = 10000},
    key_spec{.key = "malloc.arena_max",
             .type = kind::integer,
             .default_value = "0",
             .description = "glibc malloc arenas the process may use, set when a node starts "
                            "(mallopt M_ARENA_MAX); 0: glibc's default (8 per core); no effect "
                            "in the af binary, which uses tcmalloc",
             .min = 0,
             .max = 1024},
    key_spec{.key = "log.level",
             .type = kind::enumeration,
             .default_value = "info",
             .description = "Lowest log level written",
             .choices = "trace|debug|info|warn|error|off"},
    key_spec{.key = "log.format",
             .type = kind::enumeration,
             .default_value = "auto",
             .description = "Log line format; auto: text on a terminal, JSON otherwise",
             .choices = "auto|json|text"},
    key_spec{.key = "log.file", .default_value = "", .description = "Log file; empty: stderr"},
    key_spec{.key = "envelope.max_payload_bytes",
             .type = kind::integer,
             .default_value = "4194304",
             .description = "Largest envelope payload accepted, in bytes",
             .min = 1,
             .max = 1073741824},
    key_spec{.key = "agent.ask_timeout_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "Default timeout of an ask between agents, in milliseconds",
             .min = 1,
             .max = 3600000},
    key_spec{.key = "rng.seed",
             .type = kind::uint64,
             .default_value = "0",
             .description = "Seed of the node's RNG; 0: seed from OS entropy"},
    key_spec{.key = "store.url",
             .default_value = "",
             .description = "Journal and audit store: sqlite:PATH, postgres://user@host:port/db or "
                            "memory:; empty: sqlite under node.data_dir (agentflow.db)"},
    key_spec{.key = "store.sqlite.synchronous",
             .type = kind::enumeration,
             .default_value = "FULL",
             .description = "SQLite durability: FULL syncs every commit; NORMAL may lose the last "
                            "commits on power loss; OFF is for tests only",
             .choices = "FULL|NORMAL|OFF"},
    key_spec{.key = "store.retention.period_ms",
             .type = kind::integer,
             .default_value = "0",
             .description = "Retention: finished streams are deleted, and events a snapshot covers "
                            "pruned, this long after; 0: keep everything (retention off)",
             .min = 0,
             .max = 3153600000000},
    key_spec{.key = "store.retention.interval_ms",
             .type = kind::integer,
             .default_value = "60000",
             .description = "How often the journal compacts when retention is on",
             .min = 10,
             .max = 86400000},
    key_spec{.key = "store.postgres.statement_timeout_ms",
             .type = kind::integer,
             .default_value = "30000",
             .description = "PostgreSQL statement_timeout of the store's connections; 0: none",
             .min = 0,
             .max = 86400000},
    key_spec{.key = "supervision.root.max_restarts",
             .type = kind::integer,
             .default_value = "3",
             .description =
                 "Restarts the root supervisor allows within its period before the node stops",
             .min = 0,
             .max = 1000000},
    key_spec{.key = "supervision.root.period_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "Period of the root supervisor's restart intensity",
             .min = 1,
             .max = 86400000},
    key_spec{.key = "supervision.system.max_restarts",
             .type = kind::integer,
             .default_value = "3",
             .description = "Restarts the system services supervisor allows within its period",
             .min = 0,
             .max = 1000000},
    key_spec{.key = "supervision.system.period_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "Period of the system services supervisor's restart intensity",
             .min = 1,
             .max = 86400000},
    key_spec{.key = "supervision.agents.max_restarts",
             .type = kind::integer,
             .default_value = "1000",
             .description =
                 "Restarts the agents supervisor allows within its period before it escalates",
             .min = 0,
             .max = 100000000},
    key_spec{.key = "supervision.agents.period_ms",
             .type = kind::integer,
             .default_value = "10000",
             .description = "Period of the agents supervisor's restart intensity",
             .min = 1,
             .max = 86400000},
    key_spec{.key = "supervision.backoff.base_ms",
             .type = kind::integer,
             .default_value = "10",
             .description =
                 "Backoff base: the n-th consecutive restart of a child waits up to base*2^(n-2)",
             .min = 0,
             .max = 3600000},
    key_spec{.key = "supervision.backoff.cap_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "Longest backoff before restarting a child",
             .min = 0,
             .max = 3600000},
    key_spec{.key = "supervision.backoff.reset_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "A child up this long restarts its backoff from zero",
             .min = 0,
             .max = 86400000},
    key_spec{
        .key = "supervision.shutdown_timeout_ms",
        .type = kind::integer,
        .default_value = "30000",
        .description =
            "How long node shutdown waits for the supervision tree before killing what is left",
        .min = 1,
        .max = 3600000},
    // --- cluster transport (runtime/src/transport.cpp) ---
    key_spec{.key = "cluster.listen",
             .type = kind::host_port,
             .default_value = "",
             .description = "host:port of the cluster transport (port 0: ephemeral); empty: this "
                            "node does not join a cluster. Requires cluster.secret_file"},
    key_spec{.key = "cluster.advertise",
             .type = kind::host_port,
             .default_value = "",
             .description = "host:port peers are told to reach this node at; empty: the "
                            "cluster.listen host and the bound port"},
    key_spec{.key = "cluster.secret_file",
             .default_value = "",
             .description = "File holding the cluster secret (at least 16 bytes) every node "
                            "proves knowledge of on connect (HMAC-SHA256 challenge)"},
    key_spec{.key = "cluster.tls_cert",
             .default_value = "",
             .description = "PEM certificate (chain) of this node for cluster TLS; with "
                            "cluster.tls_key and cluster.tls_ca, or none of them"},
    key_spec{.key = "cluster.tls_key",
             .default_value = "",
             .description = "PEM private key of cluster.tls_cert"},
    key_spec{.key = "cluster.tls_ca",
             .default_value = "",
             .description = "PEM CA certificates trusted for peers' certificates (mutual TLS)"},
    key_spec{.key = "cluster.max_frame_bytes",
             .type = kind::integer,
             .default_value = "16777216",
             .description = "Largest frame (one batch of envelopes) accepted from or sent to a "
                            "peer, in bytes",
             .min = 1024,
             .max = 1073741824},
    key_spec{.key = "cluster.peer_rate",
             .type = kind::integer,
             .default_value = "1000000",
             .description = "Inbound envelopes per second accepted from one peer (token bucket, "
                            "one second of burst); 0: unlimited",
             .min = 0,
             .max = 1000000000},
    key_spec{.key = "cluster.queue_limit",
             .type = kind::integer,
             .default_value = "10000",
             .description = "Envelopes held for a peer while its connection is being made",
             .min = 1,
             .max = 10000000},
    key_spec{.key = "cluster.reconnect_base_ms",
             .type = kind::integer,
             .default_value = "100",
             .description = "First reconnect delay to a peer (doubles per failure, with jitter)",
             .min = 1,
             .max = 3600000},
    key_spec{.key = "cluster.reconnect_cap_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "Largest reconnect delay to a peer",
             .min = 1,
             .max = 3600000},
    key_spec{.key = "cluster.handshake_timeout_ms",
             .type = kind::integer,
             .default_value = "5000",
             .description = "Time a peer has to connect and complete the authentication handshake",
             .min = 1,
             .max = 3600000},
    // --- cluster membership and placement (apps/src/cluster_services.cpp) ---
    key_spec{.key = "cluster.join",
             .default_value = "",
             .description =
                 "Seed nodes to join through: comma-separated host:port of their "
                 "cluster.listen; empty: start a cluster of its own and wait to be joined"},
    key_spec{.key = "cluster.swim.period_ms",
             .type = kind::integer,
             .default_value = "1000",
             .description = "SWIM protocol period: one probe per period; detection and "
                            "dissemination times are counted in periods",
             .min = 10,
             .max = 600000},
    key_spec{.key = "cluster.swim.ping_timeout_ms",
             .type = kind::integer,
             .default_value = "0",
             .description = "How long a direct ping may take before indirect probes start (less "
                            "than the period); 0: 30% of cluster.swim.period_ms",
             .min = 0,
             .max = 600000},
    key_spec{.key = "cluster.swim.indirect_probes",
             .type = kind::integer,
             .default_value = "3",
             .description = "Members asked to ping a member whose direct ping failed (k)",
             .min = 0,
             .max = 32},
    key_spec{.key = "cluster.swim.suspicion_mult",
             .type = kind::integer,
             .default_value = "4",
             .description = "Suspicion timeout = mult x log10(members + 1) x period, at least "
                            "cluster.swim.suspicion_min_ms",
             .min = 1,
             .max = 100},
    key_spec{.key = "cluster.swim.suspicion_min_ms",
             .type = kind::integer,
             .default_value = "0",
             .description = "Shortest suspicion timeout; 0: 2 protocol periods",
             .min = 0,
             .max = 3600000},
    key_spec{.key = "cluster.placement.idle_timeout_ms",
             .type = kind::integer,
             .default_value = "300000",
             .description = "A virtual agent that received nothing for this long is stopped "
                            "(0: never)",
             .min = 0,
             .max = 86400000},
    key_spec{.key = "cluster.placement.suspects_keep_ownership",
             .type = kind::enumeration,
             .default_value = "false",
             .description = "false: a suspected member's virtual agents move at once (fast "
                            "failover; a refuted suspicion moves them back); true: they move only "
                            "when it is declared dead",
             .choices = "true|false"},
    // --- Raft metadata and execution takeover (apps/src/cluster_services.cpp) ---
    key_spec{.key = "cluster.raft.members",
             .default_value = "",
             .description = "The Raft group's initial voters: comma-separated node names (this "
                            "node included), the same on every member; empty: no Raft agent"},
    key_spec{.key = "cluster.raft.election_timeout_ms",
             .type = kind::integer,
             .default_value = "500",
             .description = "A follower that hears no leader for a random time between this and "
                            "twice this becomes a candidate",
             .min = 10,
             .max = 600000},
    key_spec{.key = "cluster.raft.heartbeat_ms",
             .type = kind::integer,
             .default_value = "100",
             .description = "How often the Raft leader sends AppendEntries (less than "
                            "cluster.raft.election_timeout_ms)",
             .min = 1,
             .max = 600000},
    key_spec{.key = "cluster.raft.snapshot_every",
             .type = kind::integer,
             .default_value = "10000",
             .description = "Applied Raft entries between two snapshots (the log before a "
                            "snapshot is compacted)",
             .min = 1,
             .max = 100000000},
    key_spec{.key = "cluster.exec.takeover",
             .type = kind::enumeration,
             .default_value = "auto",
             .description = "auto: with cluster.raft.members and a PostgreSQL store.url, every "
                            "execution has an owner lease and a dead node's executions are taken "
                            "over; off: each node runs the executions it finds in its store",
             .choices = "auto|off"},
    key_spec{.key = "cluster.exec.lease_ttl_ms",
             .type = kind::integer,
             .default_value = "10000",
             .description = "Time to live of an execution's owner lease, in the Raft leader's "
                            "clock: roughly how long a dead node's executions wait to be taken "
                            "over",
             .min = 100,
             .max = 86400000},
    key_spec{.key = "cluster.exec.renew_ms",
             .type = kind::integer,
             .default_value = "0",
             .description = "How often a node renews its execution leases; 0: a third of "
                            "(lease_ttl - margin)",
             .min = 0,
             .max = 86400000},
    key_spec{.key = "cluster.exec.margin_ms",
             .type = kind::integer,
             .default_value = "0",
             .description = "Safety margin for clock drift and pauses: a node stops an execution "
                            "whose lease it could not renew this long before the lease can expire "
                            "at the leader; 0: a fifth of lease_ttl",
             .min = 0,
             .max = 86400000},
    key_spec{.key = "cluster.singletons",
             .default_value = "",
             .description = "Agent types (comma-separated) this node runs as cluster singletons: "
                            "each on one node at a time, under a Raft lease (lease timings of "
                            "cluster.exec.*), reachable as singleton/<type> from every node; "
                            "needs cluster.raft.members"},
    key_spec{.key = "cluster.exec.scan_ms",
             .type = kind::integer,
             .default_value = "2000",
             .description = "How often a node looks for unfinished executions whose lease it "
                            "could take (also on every membership change)",
             .min = 10,
             .max = 86400000},
};

constexpr std::string_view k_features = "features";
constexpr std::string_view k_env_prefix = "AF_";
constexpr std::string_view k_env_test_prefix = "AF_TEST_";
constexpr std::string_view k_env_features_prefix = "AF_FEATURES_";

using env_map = std::map<std::string, std::string>;
using entry_map = std::map<std::string, config::entry, std::less<>>;

const key_spec* find_spec(std::string_view key) {
  for (const auto& spec : k_schema)
    if (spec.key == key) return &spec;
  return nullptr;
}

const key_spec* find_spec_by_env(std::string_view var) {
  for (const auto& spec : k_schema)
    if (config::env_var_name(spec.key) == var) return &spec;
  return nullptr;
}

/// True for "node" when "node.name" is a key: a map is expected there.
bool is_section(std::string_view path) {
  return std::any_of(k_schema.begin(), k_schema.end(), [&](const key_spec& spec) {
    return spec.key.size() > path.size() && spec.key.starts_with(path)
           && spec.key[path.size()] == '.';
  });
}

template <class Int>
std::optional<Int> parse_integer(std::string_view text) {
  Int out{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return out;
}

bool valid_host_port(std::string_view v) {
  if (v.empty()) return true;
  auto colon = v.rfind(':');
  if (colon == std::string_view::npos) return false;
  auto host = v.substr(0, colon);
  auto port = v.substr(colon + 1);
  if (host.empty() || std::any_of(host.begin(), host.end(), [](char c) {
        return std::isspace(static_cast<unsigned char>(c)) != 0;
      }))
    return false;
  if (host.front() == '[') { // IPv6 literals must be bracketed: [::1]:4000
    if (host.size() < 3 || host.back() != ']') return false;
  } else if (host.find(':') != std::string_view::npos) {
    return false;
  }
  auto n = parse_integer<std::uint32_t>(port);
  return n && *n <= 65535;
}

bool in_choices(std::string_view choices, std::string_view v) {
  while (!choices.empty()) {
    auto bar = choices.find('|');
    if (choices.substr(0, bar) == v) return true;
    if (bar == std::string_view::npos) break;
    choices.remove_prefix(bar + 1);
  }
  return false;
}

std::string expectation(const key_spec& spec) {
  switch (spec.type) {
  case kind::string:
    return spec.valid ? std::string{spec.expectation} : "a string";
  case kind::integer:
    return "an integer in " + std::to_string(spec.min) + ".." + std::to_string(spec.max);
  case kind::uint64:
    return "an unsigned 64-bit integer";
  case kind::enumeration:
    return "one of " + std::string{spec.choices};
  case kind::host_port:
    return "host:port with a non-empty host and a port in 0..65535, or empty";
  }
  return {};
}

std::string type_doc(const key_spec& spec) {
  switch (spec.type) {
  case kind::string:
    return "string";
  case kind::integer:
    return "int " + std::to_string(spec.min) + ".." + std::to_string(spec.max);
  case kind::uint64:
    return "uint64";
  case kind::enumeration:
    return "enum " + std::string{spec.choices};
  case kind::host_port:
    return "host:port";
  }
  return {};
}

std::optional<config::value_type> parse_value(const key_spec& spec, std::string_view text) {
  switch (spec.type) {
  case kind::string:
    if (spec.valid && !spec.valid(text)) return std::nullopt;
    return config::value_type{std::string{text}};
  case kind::integer:
    if (auto n = parse_integer<std::int64_t>(text); n && *n >= spec.min && *n <= spec.max)
      return config::value_type{*n};
    return std::nullopt;
  case kind::uint64:
    if (auto n = parse_integer<std::uint64_t>(text)) return config::value_type{*n};
    return std::nullopt;
  case kind::enumeration:
    if (in_choices(spec.choices, text)) return config::value_type{std::string{text}};
    return std::nullopt;
  case kind::host_port:
    if (valid_host_port(text)) return config::value_type{std::string{text}};
    return std::nullopt;
  }
  return std::nullopt;
}

/// Optimal string alignment distance: like Levenshtein, but a swap of two neighbours costs 1,
/// so "nmae" is one edit from "name".
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i)
    d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j)
    d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

/// "; did you mean 'node.name'?" for the closest candidate within two edits, else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  std::size_t best_distance = 3;
  for (const auto& c : candidates)
    if (auto d = edit_distance(word, c); d < best_distance) {
      best = &c;
      best_distance = d;
    }
  return best ? "; did you mean '" + *best + "'?" : std::string{};
}

/// Every name a YAML path may take: keys, their sections and "features".
std::vector<std::string> file_key_candidates() {
  std::vector<std::string> out;
  for (const auto& spec : k_schema) {
    out.emplace_back(spec.key);
    for (auto dot = spec.key.find('.'); dot != std::string_view::npos;
         dot = spec.key.find('.', dot + 1))
      out.emplace_back(spec.key.substr(0, dot));
  }
  out.emplace_back(k_features);
  return out;
}

std::vector<std::string> env_candidates() {
  std::vector<std::string> out;
  for (const auto& spec : k_schema)
    out.push_back(config::env_var_name(spec.key));
  return out;
}

std::vector<std::string> key_candidates() {
  std::vector<std::string> out;
  for (const auto& spec : k_schema)
    out.emplace_back(spec.key);
  return out;
}

/// Parses `text` for `spec` and stores it with its origin, or says what was wrong and where.
status set_value(entry_map& entries, const key_spec& spec, std::string_view text,
                 config_source source, std::string origin, std::string_view where) {
  auto value = parse_value(spec, text);
  if (!value) {
    std::string msg{where};
    msg += ": ";
    msg += spec.key;
    msg += " = '";
    msg += text;
    msg += "': expected ";
    msg += expectation(spec);
    return validation_error(std::move(msg));
  }
  entries.insert_or_assign(
      std::string{spec.key},
      config::entry{std::move(*value), std::string{text}, source, std::move(origin)});
  return {};
}

std::string lower(std::string_view s) {
  std::string out{s};
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

status bad_feature_name(std::string_view where, std::string_view name) {
  return validation_error(std::string{where} + ": invalid feature flag name '" + std::string{name}
                          + "': expected 1 to 64 characters from [a-z0-9_]");
}

// ---- YAML file ----------------------------------------------------------------------------

/// "node.yaml:3:7" (1-based line and column), or just the file when yaml-cpp has no mark.
std::string at(const std::string& file, const YAML::Mark& mark) {
  if (mark.is_null()) return file;
  return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string_view node_kind(const YAML::Node& node) {
  switch (node.Type()) {
  case YAML::NodeType::Map:
    return "map";
  case YAML::NodeType::Sequence:
    return "sequence";
  case YAML::NodeType::Null:
    return "null";
  default:
    return "scalar";
  }
}

/// A value's mark; a missing value (`name:`) has none, so the key's is used.
YAML::Mark value_mark(const YAML::Node& key, const YAML::Node& value) {
  return value.Mark().is_null() ? key.Mark() : value.Mark();
}

expected<YAML::Node> read_yaml(const std::string& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec))
    return not_found_error("config file '" + file + "' not found");
  if (!std::filesystem::is_regular_file(file, ec))
    return validation_error("config file '" + file + "' is not a regular file");
  std::ifstream in{file, std::ios::binary};
  if (!in) return make_error(errc::forbidden, "config file '" + file + "' cannot be read");
  std::ostringstream text;
  text << in.rdbuf(); // an empty file leaves `text` failed and empty: an empty document
  try {
    return YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    return validation_error(at(file, e.mark) + ": invalid YAML: " + e.msg);
  }
}

/// A plain scalar is typed by its text; a quoted or !!str-tagged one is always a string.
feature_value yaml_feature_value(const YAML::Node& node) {
  const auto& tag = node.Tag();
  if (tag == "!" || tag == "tag:yaml.org,2002:str") return node.Scalar();
  return parse_feature_value(node.Scalar());
}

/// Walks one YAML document into `entries` and `features`. It remembers where each path was set,
/// so a key given twice (also as `node.name` beside `node: {name}`) is an error, not a silent win.
class file_reader {
public:
  file_reader(const std::string& file, entry_map& entries, feature_map& features)
      : file_(file), entries_(entries), features_(features) {}

  status walk(const YAML::Node& map, const std::string& prefix) {
    for (const auto& kv : map) {
      const YAML::Node& k = kv.first;
      const YAML::Node& v = kv.second;
      if (!k.IsScalar())
        return validation_error(at(file_, k.Mark()) + ": expected a key name, got a "
                                + std::string{node_kind(k)});
      std::string path = prefix.empty() ? k.Scalar() : prefix + "." + k.Scalar();
      status st;
      if (path == k_features)
        st = features(k, v);
      else if (const key_spec* spec = find_spec(path))
        st = value(*spec, k, v);
      else if (is_section(path))
        st = section(path, k, v);
      else
        return validation_error(at(file_, k.Mark()) + ": unknown key '" + path + "'"
                                + did_you_mean(path, file_key_candidates()));
      if (!st) return st;
    }
    return {};
  }

  /// Reads the top-level `features` section and nothing else.
  status walk_features_only(const YAML::Node& map) {
    for (const auto& kv : map)
      if (kv.first.IsScalar() && kv.first.Scalar() == k_features)
        if (auto st = features(kv.first, kv.second); !st) return st;
    return {};
  }

private:
  status first_time(const std::string& path, const YAML::Node& key) {
    auto where = at(file_, key.Mark());
    auto [it, inserted] = seen_.emplace(path, where);
    if (inserted) return {};
    return validation_error(where + ": duplicate key '" + path + "' (first set at " + it->second
                            + ")");
  }

  status value(const key_spec& spec, const YAML::Node& k, const YAML::Node& v) {
    if (auto st = first_time(std::string{spec.key}, k); !st) return st;
    auto where = at(file_, value_mark(k, v));
    if (!v.IsScalar() && !v.IsNull())
      return validation_error(where + ": " + std::string{spec.key} + ": expected "
                              + expectation(spec) + ", got a " + std::string{node_kind(v)});
    auto text = v.IsNull() ? std::string{} : v.Scalar();
    return set_value(entries_, spec, text, config_source::file, "file " + where, where);
  }

  status section(const std::string& path, const YAML::Node& k, const YAML::Node& v) {
    if (auto st = first_time(path, k); !st) return st;
    if (v.IsNull()) return {};
    if (!v.IsMap())
      return validation_error(at(file_, value_mark(k, v)) + ": " + path
                              + ": expected a map of its keys, got a " + std::string{node_kind(v)});
    return walk(v, path);
  }

  status features(const YAML::Node& key, const YAML::Node& section) {
    if (auto st = first_time(std::string{k_features}, key); !st) return st;
    if (section.IsNull()) return {};
    if (!section.IsMap())
      return validation_error(at(file_, value_mark(key, section))
                              + ": features: expected a map of flag names to values, got a "
                              + std::string{node_kind(section)});
    for (const auto& kv : section) {
      const YAML::Node& k = kv.first;
      const YAML::Node& v = kv.second;
      if (!k.IsScalar() || !valid_feature_name(k.Scalar()))
        return bad_feature_name(at(file_, k.Mark()), k.IsScalar() ? k.Scalar() : node_kind(k));
      if (auto st = first_time("features." + k.Scalar(), k); !st) return st;
      if (!v.IsScalar())
        return validation_error(at(file_, value_mark(k, v)) + ": features." + k.Scalar()
                                + ": expected a bool, int or string, got a "
                                + std::string{node_kind(v)});
      features_.insert_or_assign(
          k.Scalar(),
          feature_entry{yaml_feature_value(v), config_source::file, "file " + at(file_, v.Mark())});
    }
    return {};
  }

  const std::string& file_;
  entry_map& entries_;
  feature_map& features_;
  std::map<std::string, std::string> seen_; // path -> "file:line:col" of its first appearance
};

/// Reads `file` into the file layer; with `features_only` every other section is skipped
/// unread (reloads).
status apply_file(entry_map& entries, feature_map& features, const std::string& file,
                  bool features_only) {
  auto root = read_yaml(file);
  if (!root) return std::move(root).error();
  if (root->IsNull()) return {};
  if (!root->IsMap())
    return validation_error(at(file, root->Mark())
                            + ": expected a map of configuration sections, got a "
                            + std::string{node_kind(*root)});
  file_reader reader{file, entries, features};
  try {
    return features_only ? reader.walk_features_only(*root) : reader.walk(*root, {});
  } catch (const YAML::Exception& e) {
    return validation_error(at(file, e.mark) + ": " + e.msg);
  }
}

// ---- environment and flags ----------------------------------------------------------------

/// AF_FEATURES_<NAME> sets features.<name>.
bool is_feature_var(std::string_view var) { return var.starts_with(k_env_features_prefix); }

status apply_feature_var(feature_map& features, const std::string& var, const std::string& value) {
  auto where = "env " + var;
  auto name = lower(std::string_view{var}.substr(k_env_features_prefix.size()));
  if (!valid_feature_name(name)) return bad_feature_name(where, name);
  features.insert_or_assign(name,
                            feature_entry{parse_feature_value(value), config_source::env, where});
  return {};
}

status apply_env(entry_map& entries, feature_map& features, const env_map& env) {
  for (const auto& [var, value] : env) {
    if (!var.starts_with(k_env_prefix) || var.starts_with(k_env_test_prefix)) continue;
    if (is_feature_var(var)) {
      if (auto st = apply_feature_var(features, var, value); !st) return st;
      continue;
    }
    auto where = "env " + var;
    const key_spec* spec = find_spec_by_env(var);
    if (!spec)
      return validation_error(where + ": unknown configuration variable"
                              + did_you_mean(var, env_candidates()));
    if (auto st = set_value(entries, *spec, value, config_source::env, where, where); !st)
      return st;
  }
  return {};
}

status apply_flags(entry_map& entries, feature_map& features,
                   const std::vector<config_override>& flags) {
  constexpr std::string_view features_dot = "features.";
  for (const auto& f : flags) {
    auto where = "flag " + (f.origin.empty() ? f.key : f.origin);
    if (std::string_view{f.key}.starts_with(features_dot)) {
      auto name = f.key.substr(features_dot.size());
      if (!valid_feature_name(name)) return bad_feature_name(where, name);
      features.insert_or_assign(
          name, feature_entry{parse_feature_value(f.value), config_source::flag, where});
      continue;
    }
    const key_spec* spec = find_spec(f.key);
    if (!spec)
      return validation_error(where + ": unknown configuration key '" + f.key + "'"
                              + did_you_mean(f.key, key_candidates()));
    if (auto st = set_value(entries, *spec, f.value, config_source::flag, where, where); !st)
      return st;
  }
  return {};
}

entry_map default_entries() {
  entry_map out;
  for (const auto& spec : k_schema) {
    [[maybe_unused]] auto st =
        set_value(out, spec, spec.default_value, config_source::defaults, "default", "default");
    assert(st && "every default satisfies its own schema row");
  }
  return out;
}

nlohmann::json feature_json(const feature_value& v) {
  return std::visit([](const auto& x) { return nlohmann::json(x); }, v);
}

} // namespace

config::config() : features_(std::make_shared<feature_flags>()) {}

expected<config> config::load(const config_sources& src) {
  auto entries = default_entries();
  feature_map features;
  if (!src.file.empty())
    if (auto st = apply_file(entries, features, src.file, false); !st) return st.error();
  if (auto st = apply_env(entries, features, src.env); !st) return st.error();
  if (auto st = apply_flags(entries, features, src.flags); !st) return st.error();
  config out;
  out.file_ = src.file;
  out.entries_ = std::move(entries);
  out.features_ = std::make_shared<feature_flags>(std::move(features));
  return out;
}

config config::defaults() {
  config out;
  out.entries_ = default_entries();
  return out;
}

std::map<std::string, std::string> config::process_environment() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view s{*e};
    auto eq = s.find('=');
    if (eq != std::string_view::npos) out.emplace(s.substr(0, eq), s.substr(eq + 1));
  }
  return out;
}

expected<feature_map> config::load_features(const std::string& file, const env_map& env) {
  feature_map features;
  entry_map unused;
  if (!file.empty())
    if (auto st = apply_file(unused, features, file, true); !st) return st.error();
  for (const auto& [var, value] : env)
    if (is_feature_var(var))
      if (auto st = apply_feature_var(features, var, value); !st) return st.error();
  return features;
}

std::vector<config_key_doc> config::schema() {
  std::vector<config_key_doc> out;
  out.reserve(k_schema.size());
  for (const auto& spec : k_schema)
    out.push_back({std::string{spec.key}, type_doc(spec), std::string{spec.default_value},
                   env_var_name(spec.key), std::string{spec.description}});
  return out;
}

std::string config::env_var_name(std::string_view key) {
  std::string out{k_env_prefix};
  for (char c : key)
    out += c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

const config::entry* config::find(std::string_view key) const {
  auto i = entries_.find(key);
  assert(i != entries_.end() && "config key is in the schema");
  return i != entries_.end() ? &i->second : nullptr;
}

const std::string& config::get_string(std::string_view key) const {
  static const std::string empty;
  const entry* e = find(key);
  assert((!e || std::holds_alternative<std::string>(e->value)) && "config key holds a string");
  const auto* s = e ? std::get_if<std::string>(&e->value) : nullptr;
  return s ? *s : empty;
}

const std::string& config::get_string_any(std::string_view key) const {
  static const std::string empty;
  const entry* e = find(key);
  return e ? e->text : empty;
}

std::int64_t config::get_int(std::string_view key) const {
  const entry* e = find(key);
  assert((!e || std::holds_alternative<std::int64_t>(e->value)) && "config key holds an int");
  const auto* n = e ? std::get_if<std::int64_t>(&e->value) : nullptr;
  return n ? *n : 0;
}

std::uint64_t config::get_uint(std::string_view key) const {
  const entry* e = find(key);
  assert((!e || std::holds_alternative<std::uint64_t>(e->value)) && "config key holds a uint");
  const auto* n = e ? std::get_if<std::uint64_t>(&e->value) : nullptr;
  return n ? *n : 0;
}

std::string config::origin(std::string_view key) const {
  if (auto i = entries_.find(key); i != entries_.end()) return i->second.origin;
  if (key.starts_with("features.")) {
    auto flags = features_->entries();
    if (auto f = flags->find(key.substr(9)); f != flags->end()) return f->second.origin;
  }
  return {};
}

config_source config::source(std::string_view key) const {
  if (auto i = entries_.find(key); i != entries_.end()) return i->second.source;
  if (key.starts_with("features.")) {
    auto flags = features_->entries();
    if (auto f = flags->find(key.substr(9)); f != flags->end()) return f->second.source;
  }
  return config_source::defaults;
}

nlohmann::json config::to_json() const {
  auto out = nlohmann::json::object();
  for (const auto& [key, e] : entries_) {
    auto value = std::visit([](const auto& x) { return nlohmann::json(x); }, e.value);
    out[key] = {{"value", std::move(value)},
                {"source", std::string{to_string(e.source)}},
                {"origin", e.origin}};
  }
  auto features = nlohmann::json::object();
  for (const auto& [name, f] : *features_->entries())
    features[name] = {{"value", feature_json(f.value)},
                      {"source", std::string{to_string(f.source)}},
                      {"origin", f.origin}};
  out[std::string{k_features}] = std::move(features);
  return out;
}

} // namespace af
