// Reading scenario YAML (af/sim/scenario.hpp; the format is docs/simulation.md, "Writing a
// scenario"). Built on the plan compiler's positioned YAML reader, so errors read the same:
// "FILE:LINE:COL: spec.faults.schedule[2].crash: unknown node 'n9' (nodes: n1, n2, n3)".
#include "af/sim/scenario.hpp"

#include "af/duration_text.hpp"
#include "plan/yaml_reader.hpp"

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

namespace af::sim {

namespace {

namespace fs = std::filesystem;
using plan::node_kind;
using plan::yaml_field;
using plan::yaml_map;

constexpr std::string_view k_api_version = "agentflow/v1";
constexpr std::string_view k_kind = "Scenario";
constexpr std::array<std::string_view, 11> k_invariants{
    "tasks_answered_once",  "tree_recovers",        "no_actor_leak",
    "executions_complete",  "ledger_exactly_once",  "members_agree",
    "crashed_members_dead", "virtual_exactly_once", "sagas_settled",
    "exec_single_owner",    "linearizable"};
constexpr std::int64_t k_max_nodes = 1000;
constexpr std::int64_t k_max_population = 10'000'000;
constexpr std::int64_t k_max_workflows = 1'000'000;
constexpr double k_max_rate_per_minute = 100'000;

/// "a, b, c" (the first `limit` and a count of the rest).
template <class Range>
std::string join(const Range& names, std::size_t limit = 12) {
  std::string out;
  std::size_t i = 0;
  for (const auto& n : names) {
    if (i == limit) return out + ", ... (" + std::to_string(std::size(names)) + " in all)";
    out += (i++ == 0 ? "" : ", ") + std::string{n};
  }
  return out;
}

std::string indexed(std::string_view path, std::size_t i) {
  return std::string{path} + "[" + std::to_string(i) + "]";
}

std::string member(std::string_view path, std::string_view key) {
  return std::string{path} + "." + std::string{key};
}

bool valid_name(std::string_view s, bool dots) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
           || c == '-' || (dots && c == '.');
  });
}

class reader {
public:
  explicit reader(const std::string& file) : yaml_(file), resolve_paths_(!file.empty()) {
    if (resolve_paths_) {
      std::error_code ec;
      dir_ = fs::absolute(fs::path{file}, ec).parent_path();
    }
  }

  expected<scenario> read(std::string_view text) {
    auto root = yaml_.parse(text);
    if (!root) return std::move(root).error();
    if (root->IsNull())
      return yaml_.fail(YAML::Mark::null_mark(), {},
                        "empty scenario; expected a map with apiVersion, kind, metadata and spec");
    auto top = yaml_.map(*root, {}, {}, {"apiVersion", "kind", "metadata", "spec"});
    if (!top) return std::move(top).error();
    if (auto st = expect_value(*top, "apiVersion", k_api_version); !st) return st.error();
    if (auto st = expect_value(*top, "kind", k_kind); !st) return st.error();
    if (auto st = read_metadata(*top); !st) return st.error();
    if (auto st = read_spec(*top); !st) return st.error();
    sc_.file = yaml_.file();
    return std::move(sc_);
  }

private:
  // ---- typed values, named by their full path ------------------------------------------------

  /// `f` renamed to `path`, so the plan reader's typed readers say "spec.network.loss: ...".
  static yaml_field named(const yaml_field& f, std::string path) {
    auto out = f;
    out.name = std::move(path);
    return out;
  }
  /// A list item as a field, for the same typed readers.
  static yaml_field item(const YAML::Node& n, std::string path) { return {std::move(path), n, n}; }

  expected<std::string> string(const yaml_field& f, const std::string& path) const {
    return yaml_.string(named(f, path), {});
  }
  expected<std::int64_t> integer(const yaml_field& f, const std::string& path, std::int64_t min,
                                 std::int64_t max) const {
    return yaml_.integer(named(f, path), {}, min, max);
  }
  expected<double> number(const yaml_field& f, const std::string& path, double min,
                          double max) const {
    return yaml_.number(named(f, path), {}, min, max);
  }
  expected<bool> boolean(const yaml_field& f, const std::string& path) const {
    return yaml_.boolean(named(f, path), {});
  }

  enum class sign { any, non_negative, positive };

  expected<duration> duration_of(const yaml_field& f, const std::string& path,
                                 sign allowed = sign::non_negative) const {
    if (!f.value.IsScalar())
      return yaml_.fail(f.mark(), path,
                        "expected " + std::string{duration_syntax()} + ", got a "
                            + std::string{node_kind(f.value)});
    auto d = parse_duration(f.value.Scalar());
    if (!d) return yaml_.fail(f.mark(), path, d.error().message());
    if (allowed == sign::non_negative && d->count() < 0)
      return yaml_.fail(f.mark(), path, "'" + f.value.Scalar() + "': expected a duration >= 0");
    if (allowed == sign::positive && d->count() <= 0)
      return yaml_.fail(f.mark(), path, "'" + f.value.Scalar() + "': expected a duration > 0");
    return *d;
  }

  expected<yaml_map> map(const yaml_field& f, const std::string& path,
                         std::initializer_list<std::string_view> accepted) const {
    return yaml_.map(f.value, f.mark(), path, accepted);
  }

  /// The items of a list field; `what` says what the items are, for "expected a list of ...".
  expected<std::vector<YAML::Node>> list(const yaml_field& f, const std::string& path,
                                         std::string_view what) const {
    if (!f.value.IsSequence())
      return yaml_.fail(f.mark(), path,
                        "expected a list of " + std::string{what} + ", got a "
                            + std::string{node_kind(f.value)});
    return std::vector<YAML::Node>(f.value.begin(), f.value.end());
  }

  status missing(const yaml_map& m, const std::string& path, std::string_view key,
                 std::string_view expected_text) const {
    return yaml_.fail(m.mark, path,
                      "missing '" + std::string{key} + "'; expected " + std::string{expected_text});
  }

  // ---- nodes ---------------------------------------------------------------------------------

  /// A declared node's name.
  expected<std::string> node_ref(const yaml_field& f, const std::string& path) const {
    auto name = string(f, path);
    if (!name) return name;
    if (!declared_.contains(*name))
      return yaml_.fail(f.mark(), path,
                        "unknown node '" + *name + "' (nodes: " + join(sc_.nodes) + ")");
    return name;
  }

  /// A list of distinct declared nodes.
  expected<std::vector<std::string>> node_list(const yaml_field& f, const std::string& path) const {
    auto items = list(f, path, "node names");
    if (!items) return std::move(items).error();
    std::vector<std::string> out;
    for (std::size_t i = 0; i < items->size(); ++i) {
      auto n = node_ref(item((*items)[i], indexed(path, i)), indexed(path, i));
      if (!n) return std::move(n).error();
      if (std::find(out.begin(), out.end(), *n) != out.end())
        return yaml_.fail((*items)[i].Mark(), indexed(path, i), "node '" + *n + "' listed twice");
      out.push_back(std::move(*n));
    }
    return out;
  }

  status read_nodes(const yaml_field& f) {
    const std::string path = "spec.nodes";
    sc_.nodes.clear();
    if (f.value.IsScalar()) { // a count: n1..nN
      const auto& text = f.value.Scalar();
      if (text.empty()
          || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return yaml_.fail(f.mark(), path,
                          "'" + text
                              + "': expected a list of node names ([n1, n2]) or a node "
                                "count (3)");
      auto n = integer(f, path, 1, k_max_nodes);
      if (!n) return n.error();
      for (std::int64_t i = 1; i <= *n; ++i)
        sc_.nodes.push_back("n" + std::to_string(i));
    } else {
      auto items = list(f, path, "node names (or a node count)");
      if (!items) return items.error();
      if (items->empty()) return yaml_.fail(f.mark(), path, "expected at least one node");
      if (items->size() > static_cast<std::size_t>(k_max_nodes))
        return yaml_.fail(f.mark(), path,
                          std::to_string(items->size()) + " nodes; expected at most "
                              + std::to_string(k_max_nodes));
      std::map<std::string, std::size_t> first;
      for (std::size_t i = 0; i < items->size(); ++i) {
        const auto p = indexed(path, i);
        auto name = string(item((*items)[i], p), p);
        if (!name) return name.error();
        if (!valid_name(*name, false))
          return yaml_.fail((*items)[i].Mark(), p,
                            "'" + *name
                                + "': expected a node name of 1 to 128 characters of "
                                  "[A-Za-z0-9_-]");
        if (auto [it, fresh] = first.emplace(*name, i); !fresh)
          return yaml_.fail((*items)[i].Mark(), p,
                            "duplicate node '" + *name + "' (first at " + indexed(path, it->second)
                                + ")");
        sc_.nodes.push_back(std::move(*name));
      }
    }
    return {};
  }

  // ---- network -------------------------------------------------------------------------------

  expected<latency_spec> read_latency(const yaml_field& f, const std::string& path) const {
    latency_spec out;
    if (f.value.IsScalar()) { // `latency: 5ms` is a constant latency
      auto d = duration_of(f, path);
      if (!d) return d.error();
      out.dist = latency_spec::kind::constant;
      out.min = out.max = out.mean = *d;
      return out;
    }
    auto m = yaml_.map(f.value, f.mark(), path);
    if (!m) return m.error();
    std::string dist = "uniform";
    if (const auto* d = m->find("distribution")) {
      auto v = string(*d, member(path, "distribution"));
      if (!v) return v.error();
      dist = *v;
    }
    status keys;
    if (dist == "constant") {
      out.dist = latency_spec::kind::constant;
      keys = yaml_.check_keys(*m, path, {"distribution", "value"});
    } else if (dist == "uniform") {
      out.dist = latency_spec::kind::uniform;
      keys = yaml_.check_keys(*m, path, {"distribution", "min", "max"});
    } else if (dist == "exponential") {
      out.dist = latency_spec::kind::exponential;
      keys = yaml_.check_keys(*m, path, {"distribution", "min", "mean"});
    } else {
      return yaml_.fail(m->find("distribution")->mark(), member(path, "distribution"),
                        "unknown distribution '" + dist
                            + "'; expected constant, uniform or exponential");
    }
    if (!keys) return keys.error();
    for (const auto& field : m->fields) {
      if (field.name == "distribution") continue;
      auto d = duration_of(field, member(path, field.name));
      if (!d) return d.error();
      if (field.name == "value")
        out.min = out.max = out.mean = *d;
      else if (field.name == "min")
        out.min = *d;
      else if (field.name == "max")
        out.max = *d;
      else
        out.mean = *d;
    }
    if (out.dist == latency_spec::kind::constant && !m->find("value"))
      return missing(*m, path, "value", "the constant latency (value: 5ms)").error();
    if (out.dist == latency_spec::kind::uniform && out.max < out.min)
      return yaml_.fail(m->mark, path,
                        "max (" + format_duration(out.max) + ") is below min ("
                            + format_duration(out.min) + "); expected min <= max");
    if (out.dist == latency_spec::kind::exponential && out.mean.count() <= 0)
      return yaml_.fail(m->find("mean") ? m->find("mean")->mark() : m->mark, member(path, "mean"),
                        "expected a mean > 0");
    return out;
  }

  /// The fields a link and the network's defaults share: latency, loss, duplicate.
  status read_link_fields(const yaml_map& m, const std::string& path, link_spec& out) const {
    for (const auto& f : m.fields) {
      const auto p = member(path, f.name);
      if (f.name == "latency") {
        auto l = read_latency(f, p);
        if (!l) return l.error();
        out.latency = *l;
      } else if (f.name == "loss" || f.name == "duplicate") {
        auto v = number(f, p, 0.0, 1.0);
        if (!v) return v.error();
        (f.name == "loss" ? out.loss : out.duplicate) = *v;
      }
    }
    return {};
  }

  status read_network(const yaml_field& f) {
    const std::string path = "spec.network";
    auto m = map(f, path, {"latency", "loss", "duplicate", "links"});
    if (!m) return m.error();
    if (auto st = read_link_fields(*m, path, sc_.network.defaults); !st) return st;
    const auto* links = m->find("links");
    if (!links) return {};
    const auto lp = member(path, "links");
    auto items = list(*links, lp, "links ({from, to, latency, loss, duplicate})");
    if (!items) return items.error();
    std::map<std::pair<std::string, std::string>, std::size_t> seen;
    for (std::size_t i = 0; i < items->size(); ++i) {
      const auto p = indexed(lp, i);
      auto lm = yaml_.map((*items)[i], links->mark(), p,
                          {"from", "to", "both", "latency", "loss", "duplicate"});
      if (!lm) return lm.error();
      link_override o;
      o.link = sc_.network.defaults; // what the entry does not say comes from the network
      for (const char* key : {"from", "to"}) {
        const auto* e = lm->find(key);
        if (!e) return missing(*lm, p, key, "a node name");
        auto n = node_ref(*e, member(p, key));
        if (!n) return n.error();
        (std::string_view{key} == "from" ? o.from : o.to) = *n;
      }
      if (o.from == o.to)
        return yaml_.fail(lm->find("to")->mark(), member(p, "to"),
                          "a link from '" + o.from + "' to itself; expected two different nodes");
      if (const auto* b = lm->find("both")) {
        auto v = boolean(*b, member(p, "both"));
        if (!v) return v.error();
        o.both = *v;
      }
      if (auto st = read_link_fields(*lm, p, o.link); !st) return st;
      std::vector<std::pair<std::string, std::string>> directions{{o.from, o.to}};
      if (o.both) directions.emplace_back(o.to, o.from);
      for (const auto& d : directions)
        if (auto [it, fresh] = seen.emplace(d, i); !fresh)
          return yaml_.fail(lm->mark, p,
                            "the link " + d.first + " -> " + d.second + " is already set by "
                                + indexed(lp, it->second) + "; expected one entry per direction");
      sc_.network.links.push_back(std::move(o));
    }
    return {};
  }

  // ---- populations and workflows -------------------------------------------------------------

  status read_populations(const yaml_field& f) {
    const std::string path = "spec.populations";
    auto items = list(f, path, "populations ({name, type, count, nodes, params})");
    if (!items) return items.error();
    std::map<std::string, std::size_t> first;
    for (std::size_t i = 0; i < items->size(); ++i) {
      const auto p = indexed(path, i);
      auto m = yaml_.map((*items)[i], f.mark(), p, {"name", "type", "count", "nodes", "params"});
      if (!m) return m.error();
      population_spec pop;
      pop.where = yaml_.at(m->mark);
      const auto* type = m->find("type");
      if (!type) return missing(*m, p, "type", "an agent type (sim.worker, std.echo, a plugin's)");
      auto t = string(*type, member(p, "type"));
      if (!t) return t.error();
      if (!valid_name(*t, true))
        return yaml_.fail(type->mark(), member(p, "type"),
                          "'" + *t + "': expected an agent type name of [A-Za-z0-9_.-]");
      pop.type = *t;
      pop.name = pop.type;
      const yaml_field* name_field = type;
      if (const auto* n = m->find("name")) {
        auto v = string(*n, member(p, "name"));
        if (!v) return v.error();
        if (!valid_name(*v, true))
          return yaml_.fail(n->mark(), member(p, "name"),
                            "'" + *v + "': expected 1 to 128 characters of [A-Za-z0-9_.-]");
        pop.name = *v;
        name_field = n;
      }
      if (auto [it, fresh] = first.emplace(pop.name, i); !fresh)
        return yaml_.fail(name_field->mark(), member(p, "name"),
                          "duplicate population name '" + pop.name + "' (first at "
                              + indexed(path, it->second) + "); expected distinct names");
      if (const auto* c = m->find("count")) {
        auto v = integer(*c, member(p, "count"), 1, k_max_population);
        if (!v) return v.error();
        pop.count = static_cast<std::size_t>(*v);
      }
      if (const auto* n = m->find("nodes")) {
        auto v = node_list(*n, member(p, "nodes"));
        if (!v) return v.error();
        pop.nodes = std::move(*v);
      }
      if (const auto* params = m->find("params")) {
        if (!params->value.IsMap() && !params->value.IsNull())
          return yaml_.fail(params->mark(), member(p, "params"),
                            "expected a map of parameters, got a "
                                + std::string{node_kind(params->value)});
        if (params->value.IsMap()) {
          auto v = yaml_.json(params->value, params->mark(), member(p, "params"));
          if (!v) return v.error();
          pop.params = std::move(*v);
        }
      }
      sc_.populations.push_back(std::move(pop));
    }
    return {};
  }

  status read_workflows(const yaml_field& f) {
    const std::string path = "spec.workflows";
    auto items = list(f, path, "workflows ({plan, count, interval, inputs})");
    if (!items) return items.error();
    for (std::size_t i = 0; i < items->size(); ++i) {
      const auto p = indexed(path, i);
      auto m = yaml_.map((*items)[i], f.mark(), p, {"plan", "count", "interval", "inputs"});
      if (!m) return m.error();
      workflow_spec w;
      w.where = yaml_.at(m->mark);
      w.count = 1;
      const auto* plan = m->find("plan");
      if (!plan) return missing(*m, p, "plan", "the path of a plan file");
      auto file = string(*plan, member(p, "plan"));
      if (!file) return file.error();
      w.plan = *file;
      if (resolve_paths_) {
        fs::path pp{*file};
        if (pp.is_relative()) pp = dir_ / pp;
        w.plan = pp.lexically_normal().string();
        std::error_code ec;
        if (!fs::is_regular_file(w.plan, ec))
          return yaml_.fail(plan->mark(), member(p, "plan"),
                            "plan file '" + w.plan + "' not found (a relative path is read from "
                                + "the scenario's directory)");
      }
      if (const auto* c = m->find("count")) {
        auto v = integer(*c, member(p, "count"), 1, k_max_workflows);
        if (!v) return v.error();
        w.count = static_cast<std::size_t>(*v);
      }
      if (const auto* iv = m->find("interval")) {
        auto v = duration_of(*iv, member(p, "interval"));
        if (!v) return v.error();
        w.interval = *v;
      }
      if (const auto* in = m->find("inputs")) {
        if (!in->value.IsMap())
          return yaml_.fail(in->mark(), member(p, "inputs"),
                            "expected a map of input names to values, got a "
                                + std::string{node_kind(in->value)});
        auto v = yaml_.json(in->value, in->mark(), member(p, "inputs"));
        if (!v) return v.error();
        w.inputs = std::move(*v);
      }
      sc_.workflows.push_back(std::move(w));
    }
    return {};
  }

  // ---- cluster (SWIM membership) ---------------------------------------------------------------

  status read_swim(const yaml_field& f) {
    const std::string path = "spec.cluster.swim";
    auto m = map(f, path,
                 {"period", "ping_timeout", "indirect_probes", "suspicion_mult", "suspicion_min",
                  "suspicion_max", "retransmit_mult", "max_piggyback", "reconnect_every", "sync_every",
                  "gossip_fanout",
                  "dead_retention", "join_timeout", "join_backoff_min", "join_backoff_max",
                  "leave_fanout"});
    if (!m) return m.error();
    auto& o = sc_.cluster.swim;
    for (const auto& field : m->fields) {
      const auto p = member(path, field.name);
      const auto& k = field.name;
      if (k == "suspicion_mult" || k == "retransmit_mult") {
        auto v = number(field, p, 0.01, 1000.0);
        if (!v) return v.error();
        (k == "suspicion_mult" ? o.suspicion_mult : o.retransmit_mult) = *v;
      } else if (k == "indirect_probes" || k == "max_piggyback" || k == "reconnect_every"
                 || k == "leave_fanout" || k == "sync_every" || k == "gossip_fanout") {
        auto v = integer(field, p, k == "max_piggyback" ? 1 : 0, 10'000);
        if (!v) return v.error();
        (k == "indirect_probes"   ? o.indirect_probes
         : k == "max_piggyback"   ? o.max_piggyback
         : k == "reconnect_every" ? o.reconnect_every
         : k == "sync_every"      ? o.sync_every
         : k == "gossip_fanout"   ? o.gossip_fanout
                                  : o.leave_fanout) = static_cast<std::uint32_t>(*v);
      } else {
        auto v = duration_of(field, p, sign::positive);
        if (!v) return v.error();
        (k == "period"             ? o.period
         : k == "ping_timeout"     ? o.ping_timeout
         : k == "suspicion_min"    ? o.suspicion_min
         : k == "suspicion_max"    ? o.suspicion_max
         : k == "dead_retention"   ? o.dead_retention
         : k == "join_timeout"     ? o.join_timeout
         : k == "join_backoff_min" ? o.join_backoff_min
                                   : o.join_backoff_max) = *v;
      }
    }
    if (auto st = cluster::validate(o); !st)
      return yaml_.fail(f.mark(), path, st.error().message());
    return {};
  }

  status read_joins(const yaml_field& f) {
    const std::string path = "spec.cluster.joins";
    auto items = list(f, path, "joins ({at: 1s, nodes: [n2, n3], seeds: [n1]})");
    if (!items) return items.error();
    std::set<std::string> named;
    std::vector<std::size_t> rest; // entries with `nodes: all`
    for (std::size_t i = 0; i < items->size(); ++i) {
      const auto p = indexed(path, i);
      auto m = yaml_.map((*items)[i], f.mark(), p, {"at", "every", "nodes", "seeds"});
      if (!m) return m.error();
      cluster_join_spec j;
      j.where = yaml_.at(m->mark);
      if (const auto* at = m->find("at")) {
        auto v = duration_of(*at, member(p, "at"));
        if (!v) return v.error();
        j.at = *v;
      }
      if (const auto* ev = m->find("every")) {
        auto v = duration_of(*ev, member(p, "every"));
        if (!v) return v.error();
        j.every = *v;
      }
      const auto* nodes = m->find("nodes");
      if (!nodes) return missing(*m, p, "nodes", "a list of node names, or all");
      if (nodes->value.IsScalar() && nodes->value.Scalar() == "all") {
        rest.push_back(sc_.cluster.joins.size());
      } else {
        auto v = node_list(*nodes, member(p, "nodes"));
        if (!v) return v.error();
        for (const auto& n : *v)
          if (!named.insert(n).second)
            return yaml_.fail(nodes->mark(), member(p, "nodes"),
                              "node '" + n + "' joins twice (in an earlier entry)");
        j.nodes = std::move(*v);
      }
      if (const auto* seeds = m->find("seeds")) {
        auto v = node_list(*seeds, member(p, "seeds"));
        if (!v) return v.error();
        j.seeds = std::move(*v);
      }
      sc_.cluster.joins.push_back(std::move(j));
    }
    if (rest.size() > 1)
      return yaml_.fail(f.mark(), path, "only one entry may say `nodes: all`");
    if (!rest.empty())
      for (const auto& n : sc_.nodes)
        if (!named.contains(n)) sc_.cluster.joins[rest.front()].nodes.push_back(n);
    return {};
  }

  status read_cluster(const yaml_field& f) {
    const std::string path = "spec.cluster";
    auto m = map(f, path, {"profile", "swim", "joins"});
    if (!m) return m.error();
    sc_.cluster.enabled = true;
    if (const auto* pr = m->find("profile")) {
      auto v = string(*pr, member(path, "profile"));
      if (!v) return v.error();
      if (*v != "full" && *v != "membership")
        return yaml_.fail(pr->mark(), member(path, "profile"),
                          "'" + *v + "'; expected full (journal, audit, executions and "
                                     "membership on every node) or membership (membership only)");
      sc_.cluster.membership_only = *v == "membership";
    }
    if (const auto* s = m->find("swim"))
      if (auto st = read_swim(*s); !st) return st;
    if (const auto* j = m->find("joins"))
      if (auto st = read_joins(*j); !st) return st;
    return {};
  }

  // ---- faults --------------------------------------------------------------------------------

  /// A partition's groups: lists of distinct declared nodes, no node in two groups; the nodes
  /// no group lists form one more group, so the groups always cover every node.
  expected<std::vector<std::vector<std::string>>> read_groups(const yaml_field& f,
                                                              const std::string& path) const {
    auto items = list(f, path, "node groups ([[n1], [n2, n3]])");
    if (!items) return std::move(items).error();
    if (items->empty()) return yaml_.fail(f.mark(), path, "expected at least one group of nodes");
    std::vector<std::vector<std::string>> groups;
    std::map<std::string, std::size_t> group_of;
    for (std::size_t g = 0; g < items->size(); ++g) {
      const auto gp = indexed(path, g);
      auto nodes = node_list(item((*items)[g], gp), gp);
      if (!nodes) return std::move(nodes).error();
      if (nodes->empty()) return yaml_.fail((*items)[g].Mark(), gp, "expected at least one node");
      for (const auto& n : *nodes)
        if (auto [it, fresh] = group_of.emplace(n, g); !fresh)
          return yaml_.fail((*items)[g].Mark(), gp,
                            "node '" + n + "' is also in " + indexed(path, it->second)
                                + "; expected each node in one group");
      groups.push_back(std::move(*nodes));
    }
    std::vector<std::string> rest;
    for (const auto& n : sc_.nodes)
      if (!group_of.contains(n)) rest.push_back(n);
    if (!rest.empty()) groups.push_back(std::move(rest));
    if (groups.size() < 2)
      return yaml_.fail(f.mark(), path,
                        "every node is in one group, so nothing is cut off; expected at least "
                        "two groups");
    return groups;
  }

  /// `throw: {node, agent}`: when `agent` names an agent of a population (NAME-INDEX), the
  /// index must exist and the agent must be placed on `node` (round-robin over its nodes).
  status check_throw_target(const fault_spec& fault, const yaml_field& agent_field,
                            const std::string& path) const {
    for (const auto& pop : sc_.populations) {
      if (!fault.agent.starts_with(pop.name + "-")) continue;
      const auto index_text = std::string_view{fault.agent}.substr(pop.name.size() + 1);
      if (index_text.empty() || !std::all_of(index_text.begin(), index_text.end(), [](char c) {
            return c >= '0' && c <= '9';
          }))
        continue;
      if (index_text.size() > 9 || std::stoull(std::string{index_text}) >= pop.count)
        return yaml_.fail(agent_field.mark(), path,
                          "no agent '" + fault.agent + "': population '" + pop.name + "' has "
                              + std::to_string(pop.count) + " agents (" + pop.name + "-0 .. "
                              + pop.name + "-" + std::to_string(pop.count - 1) + ")");
      const auto& placed = pop.nodes.empty() ? sc_.nodes : pop.nodes;
      const auto& home = placed[std::stoull(std::string{index_text}) % placed.size()];
      if (home != fault.node)
        return yaml_.fail(agent_field.mark(), path,
                          "agent '" + fault.agent + "' runs on node '" + home + "', not '"
                              + fault.node
                              + "' (population agents are placed round-robin over their nodes)");
      return {};
    }
    return {};
  }

  status read_fault(const YAML::Node& node, const yaml_field& list_field, std::size_t i) {
    const auto p = indexed("spec.faults.schedule", i);
    auto m = yaml_.map(node, list_field.mark(), p);
    if (!m) return m.error();
    static constexpr std::array<std::string_view, 6> kinds{"crash", "restart", "partition",
                                                           "heal",  "skew",    "throw"};
    const yaml_field* kind = nullptr;
    for (const auto& f : m->fields) {
      if (std::find(kinds.begin(), kinds.end(), f.name) == kinds.end()) continue;
      if (kind)
        return yaml_.fail(f.key.Mark(), p,
                          "both '" + kind->name + "' and '" + f.name
                              + "'; expected one fault per entry");
      kind = &f;
    }
    if (!kind)
      return yaml_.fail(m->mark, p,
                        "missing the fault; expected one of: " + join(kinds) + " (and at)");
    const auto kp = member(p, kind->name);
    status keys;
    if (kind->name == "crash")
      keys = yaml_.check_keys(*m, p, {"at", "crash", "down_for"});
    else if (kind->name == "partition")
      keys = yaml_.check_keys(*m, p, {"at", "partition", "heal_after"});
    else
      keys = yaml_.check_keys(*m, p, {"at", kind->name});
    if (!keys) return keys;

    fault_spec fault;
    fault.where = yaml_.at(m->mark);
    const auto* at = m->find("at");
    if (!at) return missing(*m, p, "at", "the virtual time of the fault (at: 10s)");
    auto when = duration_of(*at, member(p, "at"));
    if (!when) return when.error();
    if (*when > sc_.run_for)
      return yaml_.fail(at->mark(), member(p, "at"),
                        format_duration(*when) + " is after the end of the run (spec.duration "
                            + format_duration(sc_.run_for) + "); expected at most "
                            + format_duration(sc_.run_for));
    fault.at = *when;

    if (kind->name == "crash" || kind->name == "restart") {
      fault.what = kind->name == "crash" ? fault_spec::kind::crash : fault_spec::kind::restart;
      auto n = node_ref(*kind, kp);
      if (!n) return n.error();
      fault.node = *n;
      if (const auto* d = m->find("down_for")) {
        auto v = duration_of(*d, member(p, "down_for"));
        if (!v) return v.error();
        fault.down_for = *v;
      }
    } else if (kind->name == "partition") {
      fault.what = fault_spec::kind::partition;
      auto groups = read_groups(*kind, kp);
      if (!groups) return groups.error();
      fault.groups = std::move(*groups);
      if (const auto* h = m->find("heal_after")) {
        auto v = duration_of(*h, member(p, "heal_after"));
        if (!v) return v.error();
        fault.heal_after = *v;
      }
    } else if (kind->name == "heal") {
      fault.what = fault_spec::kind::heal;
      auto v = boolean(*kind, kp);
      if (!v) return v.error();
      if (!*v)
        return yaml_.fail(kind->mark(), kp, "expected true (heal: true ends every partition)");
    } else if (kind->name == "skew") {
      fault.what = fault_spec::kind::skew;
      auto sm = map(*kind, kp, {"node", "by"});
      if (!sm) return sm.error();
      const auto* n = sm->find("node");
      if (!n) return missing(*sm, kp, "node", "the node whose clock is skewed");
      auto name = node_ref(*n, member(kp, "node"));
      if (!name) return name.error();
      fault.node = *name;
      const auto* by = sm->find("by");
      if (!by) return missing(*sm, kp, "by", "how far the clock runs ahead (by: 250ms, or -250ms)");
      auto v = duration_of(*by, member(kp, "by"), sign::any);
      if (!v) return v.error();
      fault.skew = *v;
    } else { // throw
      fault.what = fault_spec::kind::throw_in;
      auto tm = map(*kind, kp, {"node", "agent"});
      if (!tm) return tm.error();
      const auto* n = tm->find("node");
      if (!n) return missing(*tm, kp, "node", "the node of the agent that throws");
      auto name = node_ref(*n, member(kp, "node"));
      if (!name) return name.error();
      fault.node = *name;
      const auto* a = tm->find("agent");
      if (!a) return missing(*tm, kp, "agent", "the name of the agent that throws (worker-3)");
      auto agent = string(*a, member(kp, "agent"));
      if (!agent) return agent.error();
      fault.agent = *agent;
      if (auto st = check_throw_target(fault, *a, member(kp, "agent")); !st) return st;
    }
    sc_.faults.push_back(std::move(fault));
    return {};
  }

  status read_random(const yaml_field& f) {
    const std::string path = "spec.faults.random";
    auto m = map(f, path,
                 {"crash_per_minute", "down_for", "partition_per_minute", "partition_for",
                  "throw_per_minute"});
    if (!m) return m.error();
    auto& r = sc_.random_faults;
    for (const auto& field : m->fields) {
      const auto p = member(path, field.name);
      if (field.name.ends_with("_per_minute")) {
        auto v = number(field, p, 0.0, k_max_rate_per_minute);
        if (!v) return v.error();
        (field.name == "crash_per_minute"       ? r.crash_per_minute
         : field.name == "partition_per_minute" ? r.partition_per_minute
                                                : r.throw_per_minute) = *v;
      } else {
        auto v = duration_of(field, p, sign::positive);
        if (!v) return v.error();
        (field.name == "down_for" ? r.down_for : r.partition_for) = *v;
      }
    }
    return {};
  }

  status read_faults(const yaml_field& f) {
    const std::string path = "spec.faults";
    auto m = map(f, path, {"schedule", "random"});
    if (!m) return m.error();
    if (const auto* s = m->find("schedule")) {
      auto items = list(*s, member(path, "schedule"), "faults ({at: 10s, crash: n2})");
      if (!items) return items.error();
      for (std::size_t i = 0; i < items->size(); ++i)
        if (auto st = read_fault((*items)[i], *s, i); !st) return st;
    }
    if (const auto* r = m->find("random"))
      if (auto st = read_random(*r); !st) return st;
    return {};
  }

  status read_invariants(const yaml_field& f) {
    const std::string path = "spec.invariants";
    auto items = list(f, path, "invariant names");
    if (!items) return items.error();
    for (std::size_t i = 0; i < items->size(); ++i) {
      const auto p = indexed(path, i);
      auto name = string(item((*items)[i], p), p);
      if (!name) return name.error();
      if (std::find(k_invariants.begin(), k_invariants.end(), *name) == k_invariants.end())
        return yaml_.fail((*items)[i].Mark(), p,
                          "unknown invariant '" + *name
                              + "'; expected one of: " + join(k_invariants));
      if (std::find(sc_.invariants.begin(), sc_.invariants.end(), *name) != sc_.invariants.end())
        return yaml_.fail((*items)[i].Mark(), p, "invariant '" + *name + "' listed twice");
      sc_.invariants.push_back(std::move(*name));
    }
    return {};
  }

  // ---- the document --------------------------------------------------------------------------

  status expect_value(const yaml_map& m, std::string_view key, std::string_view want) const {
    const auto* f = m.find(key);
    if (!f) return missing(m, {}, key, std::string{key} + ": " + std::string{want});
    auto v = string(*f, std::string{key});
    if (!v) return v.error();
    if (*v != want)
      return yaml_.fail(f->mark(), key, "'" + *v + "'; expected " + std::string{want});
    return {};
  }

  status read_metadata(const yaml_map& top) {
    const auto* f = top.find("metadata");
    if (!f) return missing(top, {}, "metadata", "metadata: {name: NAME}");
    auto m = map(*f, "metadata", {"name", "description"});
    if (!m) return m.error();
    const auto* name = m->find("name");
    if (!name) return missing(*m, "metadata", "name", "the scenario's name");
    auto text = string(*name, "metadata.name");
    if (!text) return text.error();
    if (!valid_name(*text, true))
      return yaml_.fail(name->mark(), "metadata.name",
                        "'" + *text + "'; expected 1 to 128 characters of [A-Za-z0-9_.-]");
    sc_.name = *text;
    if (const auto* d = m->find("description"); d && !d->value.IsScalar())
      return yaml_.fail(d->mark(), "metadata.description",
                        "expected a string, got a " + std::string{node_kind(d->value)});
    return {};
  }

  status read_spec(const yaml_map& top) {
    const auto* f = top.find("spec");
    if (!f) return missing(top, {}, "spec", "spec: {duration: 60s, nodes: [...], ...}");
    auto spec = map(*f, "spec",
                    {"duration", "drain", "nodes", "network", "populations", "workflows", "faults",
                     "invariants", "cluster", "virtual_agents", "raft", "ownership",
                     "kv_clients"});
    if (!spec) return spec.error();
    // Nodes and the duration first: the other sections refer to them.
    if (const auto* n = spec->find("nodes"))
      if (auto st = read_nodes(*n); !st) return st;
    declared_.insert(sc_.nodes.begin(), sc_.nodes.end());
    if (const auto* d = spec->find("duration")) {
      auto v = duration_of(*d, "spec.duration", sign::positive);
      if (!v) return v.error();
      sc_.run_for = *v;
    }
    if (const auto* d = spec->find("drain")) {
      auto v = duration_of(*d, "spec.drain");
      if (!v) return v.error();
      sc_.drain = *v;
    }
    if (const auto* n = spec->find("network"))
      if (auto st = read_network(*n); !st) return st;
    if (const auto* p = spec->find("populations"))
      if (auto st = read_populations(*p); !st) return st;
    if (const auto* w = spec->find("workflows"))
      if (auto st = read_workflows(*w); !st) return st;
    if (const auto* fl = spec->find("faults"))
      if (auto st = read_faults(*fl); !st) return st;
    if (const auto* c = spec->find("cluster"))
      if (auto st = read_cluster(*c); !st) return st;
    if (const auto* i = spec->find("invariants"))
      if (auto st = read_invariants(*i); !st) return st;
    if (const auto* v = spec->find("virtual_agents"))
      if (auto st = read_virtual_agents(*v); !st) return st;
    if (const auto* r = spec->find("raft"))
      if (auto st = read_raft(*r); !st) return st;
    if (const auto* o = spec->find("ownership"))
      if (auto st = read_ownership(*o); !st) return st;
    if (const auto* k = spec->find("kv_clients"))
      if (auto st = read_kv_clients(*k); !st) return st;
    return {};
  }

  // ---- execution ownership (takeover; af/plan/executor.hpp exec_ownership) ---------------------

  status read_ownership(const yaml_field& f) {
    const std::string path = "spec.ownership";
    auto m = map(f, path,
                 {"lease_ttl", "margin", "renew", "scan", "scan_max", "ask_timeout",
                  "planted_bug"});
    if (!m) return m.error();
    auto& own = sc_.ownership;
    own.enabled = true;
    auto& o = own.options;
    o.enabled = true;
    // Simulator-sized defaults: takeovers within a few virtual seconds.
    o.lease_ttl = std::chrono::seconds(2);
    o.margin = std::chrono::milliseconds(400);
    o.renew_every = std::chrono::milliseconds(500);
    o.scan_every = std::chrono::milliseconds(500);
    o.ask_timeout = std::chrono::milliseconds(500);
    for (const auto& field : m->fields) {
      const auto p = member(path, field.name);
      const auto& k = field.name;
      if (k == "scan_max") {
        auto v = integer(field, p, 1, 1'000'000);
        if (!v) return v.error();
        o.scan_max = static_cast<std::uint32_t>(*v);
      } else if (k == "planted_bug") {
        auto v = string(field, p);
        if (!v) return v.error();
        if (*v == "none")
          o.planted_bug = plan::exec_planted_bug::none;
        else if (*v == "skip_lease_check")
          o.planted_bug = plan::exec_planted_bug::skip_lease_check;
        else if (*v == "ignore_deadline")
          o.planted_bug = plan::exec_planted_bug::ignore_deadline;
        else
          return yaml_.fail(field.mark(), p,
                            "expected none, skip_lease_check or ignore_deadline, got '" + *v
                                + "'");
      } else {
        auto v = duration_of(field, p, k == "margin" ? sign::non_negative : sign::positive);
        if (!v) return v.error();
        (k == "lease_ttl" ? o.lease_ttl
         : k == "margin"  ? o.margin
         : k == "renew"   ? o.renew_every
         : k == "scan"    ? o.scan_every
                          : o.ask_timeout) = *v;
      }
    }
    if (auto st = plan::validate(o); !st) return yaml_.fail(f.mark(), path, st.error().message());
    return {};
  }

  // ---- kv_clients (the Raft store's clients; af/sim/kv_workload.hpp) --------------------------

  status read_kv_clients(const yaml_field& f) {
    const std::string path = "spec.kv_clients";
    auto m = map(f, path,
                 {"clients", "ops_per_client", "keys", "timeout", "attempts", "backoff", "think",
                  "mix", "nodes", "stale_reads"});
    if (!m) return m.error();
    if (!sc_.raft.enabled)
      return yaml_.fail(f.mark(), path, "needs a raft section (the store its clients use)");
    auto& k = sc_.kv_clients;
    k.enabled = true;
    for (auto [key, out, lo, hi] :
         {std::tuple{"clients", &k.clients, 1, 1000},
          std::tuple{"ops_per_client", &k.ops_per_client, 1, 1'000'000},
          std::tuple{"keys", &k.keys, 1, 1000}, std::tuple{"attempts", &k.attempts, 1, 100}})
      if (const auto* v = m->find(key)) {
        auto n = integer(*v, member(path, key), lo, hi);
        if (!n) return n.error();
        *out = static_cast<std::uint32_t>(*n);
      }
    for (auto [key, out, sg] : {std::tuple{"timeout", &k.timeout, sign::positive},
                                std::tuple{"backoff", &k.backoff, sign::non_negative},
                                std::tuple{"think", &k.think, sign::non_negative}})
      if (const auto* v = m->find(key)) {
        auto d = duration_of(*v, member(path, key), sg);
        if (!d) return d.error();
        *out = *d;
      }
    if (const auto* v = m->find("mix")) {
      const auto mp = member(path, "mix");
      auto mix = map(*v, mp, {"put", "get", "cas"});
      if (!mix) return mix.error();
      for (auto [key, out] :
           {std::pair{"put", &k.put}, std::pair{"get", &k.get}, std::pair{"cas", &k.cas}})
        if (const auto* w = mix->find(key)) {
          auto x = number(*w, member(mp, key), 0.0, 1e9);
          if (!x) return x.error();
          *out = *x;
        } else {
          *out = 0; // a mix lists every operation it wants
        }
      if (k.put + k.get + k.cas <= 0)
        return yaml_.fail(v->mark(), mp, "expected a positive weight for put, get or cas");
    }
    if (const auto* v = m->find("nodes")) {
      auto nodes = node_list(*v, member(path, "nodes"));
      if (!nodes) return nodes.error();
      if (nodes->empty()) return yaml_.fail(v->mark(), member(path, "nodes"), "empty list");
      k.nodes = std::move(*nodes);
    }
    if (const auto* v = m->find("stale_reads")) {
      auto b = boolean(*v, member(path, "stale_reads"));
      if (!b) return b.error();
      k.stale_reads = *b;
    }
    // The clients' history is always checked.
    if (std::find(sc_.invariants.begin(), sc_.invariants.end(), "linearizable")
        == sc_.invariants.end())
      sc_.invariants.emplace_back("linearizable");
    return {};
  }

  // ---- raft (the metadata group; af/cluster/raft.hpp) ------------------------------------------

  status read_raft(const yaml_field& f) {
    const std::string path = "spec.raft";
    auto m = map(f, path,
                 {"members", "group", "election_timeout_min", "election_timeout_max", "heartbeat",
                  "max_batch", "max_inflight", "snapshot_every", "request_timeout",
                  "check_quorum", "unsafe_double_vote", "writes_per_second", "keys"});
    if (!m) return m.error();
    auto& r = sc_.raft;
    r.enabled = true;
    auto& o = r.options;
    o.members = sc_.nodes;
    for (const auto& field : m->fields) {
      const auto p = member(path, field.name);
      const auto& k = field.name;
      if (k == "members") {
        auto v = node_list(field, p);
        if (!v) return v.error();
        if (v->empty()) return yaml_.fail(field.mark(), p, "expected at least one member");
        o.members = std::move(*v);
      } else if (k == "group") {
        auto v = string(field, p);
        if (!v) return v.error();
        o.group = *v;
      } else if (k == "max_batch" || k == "max_inflight" || k == "keys") {
        auto v = integer(field, p, 1, 1'000'000);
        if (!v) return v.error();
        (k == "max_batch" ? o.max_batch : k == "max_inflight" ? o.max_inflight : r.keys) =
            static_cast<std::uint32_t>(*v);
      } else if (k == "snapshot_every") {
        auto v = integer(field, p, 0, 1'000'000'000);
        if (!v) return v.error();
        o.snapshot_every = static_cast<std::uint64_t>(*v);
      } else if (k == "check_quorum" || k == "unsafe_double_vote") {
        auto v = boolean(field, p);
        if (!v) return v.error();
        (k == "check_quorum" ? o.check_quorum : o.unsafe_double_vote) = *v;
      } else if (k == "writes_per_second") {
        auto v = number(field, p, 0.0, 100'000.0);
        if (!v) return v.error();
        r.writes_per_second = *v;
      } else {
        auto v = duration_of(field, p, sign::positive);
        if (!v) return v.error();
        (k == "election_timeout_min"   ? o.election_timeout_min
         : k == "election_timeout_max" ? o.election_timeout_max
         : k == "heartbeat"            ? o.heartbeat
                                       : o.request_timeout) = *v;
      }
    }
    if (auto st = cluster::validate(o); !st)
      return yaml_.fail(f.mark(), path, st.error().message());
    return {};
  }

  // ---- virtual agents (placement; af/sim/virtual_agents.hpp) ---------------------------------

  status read_virtual_agents(const yaml_field& f) {
    const std::string path = "spec.virtual_agents";
    auto m = map(f, path,
                 {"kinds", "ids", "client_interval", "client_timeout", "client_nodes",
                  "idle_timeout", "detect_min", "detect_max", "declare"});
    if (!m) return m.error();
    auto& va = sc_.virtual_agents;
    const auto* kinds = m->find("kinds");
    if (!kinds) return missing(*m, path, "kinds", "a list of counter kinds ([counter])");
    auto items = list(*kinds, member(path, "kinds"), "kind names");
    if (!items) return items.error();
    for (std::size_t i = 0; i < items->size(); ++i) {
      const auto p = indexed(member(path, "kinds"), i);
      auto k = string(item((*items)[i], p), p);
      if (!k) return k.error();
      if (!valid_name(*k, true) || k->starts_with("af."))
        return yaml_.fail((*items)[i].Mark(), p,
                          "'" + *k + "'; expected [A-Za-z0-9_.-], not starting with 'af.'");
      va.kinds.push_back(std::move(*k));
    }
    if (va.kinds.empty()) return yaml_.fail(kinds->mark(), member(path, "kinds"), "empty list");
    if (const auto* v = m->find("ids")) {
      auto n = integer(*v, member(path, "ids"), 1, 10'000'000);
      if (!n) return n.error();
      va.ids = static_cast<std::size_t>(*n);
    }
    for (auto [key, out, sg] :
         {std::tuple{"client_interval", &va.client_interval, sign::positive},
          std::tuple{"client_timeout", &va.client_timeout, sign::positive},
          std::tuple{"idle_timeout", &va.idle_timeout, sign::non_negative},
          std::tuple{"detect_min", &va.detect_min, sign::non_negative},
          std::tuple{"detect_max", &va.detect_max, sign::non_negative}})
      if (const auto* v = m->find(key)) {
        auto d = duration_of(*v, member(path, key), sg);
        if (!d) return d.error();
        *out = *d;
      }
    if (va.detect_max < va.detect_min)
      return yaml_.fail(m->mark, member(path, "detect_max"), "must not be below detect_min");
    if (const auto* v = m->find("client_nodes")) {
      auto nodes = node_list(*v, member(path, "client_nodes"));
      if (!nodes) return nodes.error();
      va.client_nodes = std::move(*nodes);
    }
    if (const auto* v = m->find("declare")) {
      const auto dp = member(path, "declare");
      auto decl = list(*v, dp, "declarations ({at, node, state})");
      if (!decl) return decl.error();
      for (std::size_t i = 0; i < decl->size(); ++i) {
        const auto p = indexed(dp, i);
        auto dm = yaml_.map((*decl)[i], v->mark(), p, {"at", "node", "state"});
        if (!dm) return dm.error();
        membership_declaration d;
        for (const char* key : {"at", "node", "state"})
          if (!dm->find(key)) return missing(*dm, p, key, "at, node and state");
        auto at = duration_of(*dm->find("at"), member(p, "at"));
        if (!at) return at.error();
        d.at = *at;
        auto node = node_ref(*dm->find("node"), member(p, "node"));
        if (!node) return node.error();
        d.node = std::move(*node);
        auto st = string(*dm->find("state"), member(p, "state"));
        if (!st) return st.error();
        if (*st != "alive" && *st != "suspect" && *st != "dead" && *st != "left")
          return yaml_.fail(dm->find("state")->mark(), member(p, "state"),
                            "'" + *st + "'; expected alive, suspect, dead or left");
        d.state = std::move(*st);
        va.declarations.push_back(std::move(d));
      }
    }
    return {};
  }

  plan::yaml_reader yaml_;
  bool resolve_paths_;
  fs::path dir_;
  std::set<std::string, std::less<>> declared_;
  scenario sc_;
};

} // namespace

expected<scenario> parse_scenario(std::string_view yaml, const std::string& file) {
  reader r{file};
  try {
    return r.read(yaml);
  } catch (const YAML::Exception& e) {
    return plan::yaml_reader{file}.fail(e.mark, {}, e.msg);
  }
}

expected<scenario> load_scenario(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return not_found_error("scenario file '" + path + "' not found");
  if (!fs::is_regular_file(path, ec))
    return validation_error("scenario file '" + path + "' is not a regular file");
  std::ifstream in{path, std::ios::binary};
  if (!in) return make_error(errc::forbidden, "scenario file '" + path + "' cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_scenario(text.str(), path);
}

expected<duration> parse_duration(std::string_view text) { return af::parse_duration(text); }

} // namespace af::sim
