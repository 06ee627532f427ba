// `spec.type: bt`: a behaviour tree of sequence, selector, parallel, condition, action and the
// inverter, retry and timeout decorators. Nodes without an `id` are named by their path
// ("root/0/1"); ids are unique so that the executor can journal each node's result.
#include "plan/expr.hpp"
#include "plan/plan_reader.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <utility>

namespace af::plan {

namespace {

constexpr std::array<std::string_view, 9> k_node_keys = {"id",       "sequence",  "selector",
                                                         "parallel", "condition", "action",
                                                         "inverter", "retry",     "timeout"};
constexpr std::array<std::string_view, 9> k_action_keys = {
    "agent", "tool", "plan", "wait", "approval", "node", "input", "retry", "timeout"};
constexpr std::array<std::string_view, 4> k_condition_keys = {"agent", "tool", "node", "input"};
constexpr std::string_view k_node_types =
    "sequence, selector, parallel, condition, action, inverter, retry, timeout";
/// Trees deeper than this are a mistake, and reading them would recurse without bound.
constexpr std::size_t k_max_depth = 64;

struct pending_refs {
  std::string context;
  std::vector<located_ref> refs;
};

class bt_reader {
public:
  explicit bt_reader(plan_reader& r) : r_(r) {}

  status read(const YAML::Node& node, const YAML::Mark& where, const std::string& path,
              v1::BtNode& out) {
    if (static_cast<std::size_t>(std::count(path.begin(), path.end(), '/')) > k_max_depth)
      return r_.yaml.fail(node.Mark().is_null() ? where : node.Mark(), "node '" + path + "'",
                          "the tree is deeper than " + std::to_string(k_max_depth)
                              + " levels; expected a shallower tree");
    auto raw = r_.yaml.map(node, where, "node '" + path + "'");
    if (!raw) return raw.error();
    std::string id = path;
    if (const auto* f = raw->find("id")) {
      auto given = r_.yaml.string(*f, "node '" + path + "'");
      if (!given) return given.error();
      if (!valid_id(*given))
        return r_.yaml.fail(f->mark(), "node '" + *given + "'",
                            "invalid id; expected 1 to 128 characters of [A-Za-z0-9_-]");
      id = *given;
    }
    auto context = "node '" + id + "'";
    if (auto st = r_.yaml.check_keys(*raw, context, k_node_keys); !st) return st;
    if (auto [it, fresh] = ids_.emplace(id, raw->mark); !fresh)
      return r_.yaml.fail(raw->mark, context,
                          "duplicate node id '" + id + "' (first at line "
                              + std::to_string(it->second.line + 1) + "); expected unique ids");
    out.set_id(id);
    r_.set_pos(out.mutable_pos(), raw->mark);

    const yaml_field* type = nullptr;
    for (const auto& f : raw->fields) {
      if (f.name == "id") continue;
      if (type)
        return r_.yaml.fail(f.key.Mark(), context,
                            "both '" + type->name + "' and '" + f.name
                                + "' given; expected exactly one node type of: "
                                + std::string{k_node_types});
      type = &f;
    }
    if (!type)
      return r_.yaml.fail(raw->mark, context,
                          "no node type; expected one of: " + std::string{k_node_types});
    return read_type(*type, context, path, out);
  }

  /// The ids ${steps.ID.output} may name: actions and conditions that call something.
  [[nodiscard]] status check_refs() const {
    for (const auto& p : pending_)
      if (auto st = r_.check_refs(p.refs, p.context, false); !st) return st;
    return {};
  }

private:
  status read_type(const yaml_field& f, const std::string& context, const std::string& path,
                   v1::BtNode& out) {
    auto ctx = context + ": " + f.name;
    if (f.name == "sequence" || f.name == "selector") {
      out.set_type(f.name == "sequence" ? v1::BT_SEQUENCE : v1::BT_SELECTOR);
      return children(f, ctx, path, out);
    }
    if (f.name == "parallel") return parallel(f, ctx, path, out);
    if (f.name == "condition") return condition(f, ctx, out);
    if (f.name == "action") {
      out.set_type(v1::BT_ACTION);
      auto m = r_.yaml.map(f.value, f.mark(), ctx, k_action_keys);
      if (!m) return m.error();
      return call(*m, ctx, out);
    }
    if (f.name == "inverter") {
      out.set_type(v1::BT_INVERTER);
      return read(f.value, f.mark(), path + "/0", *out.add_children());
    }
    return decorator(f, ctx, path, out);
  }

  status children(const yaml_field& f, const std::string& ctx, const std::string& path,
                  v1::BtNode& out) {
    if (!f.value.IsSequence() || f.value.size() == 0)
      return r_.yaml.fail(f.mark(), ctx,
                          "expected a non-empty list of nodes, got "
                              + (f.value.IsSequence() ? std::string{"an empty list"}
                                                      : "a " + std::string{node_kind(f.value)}));
    for (std::size_t i = 0; i < f.value.size(); ++i)
      if (auto st = read(f.value[i], f.mark(), path + "/" + std::to_string(i), *out.add_children());
          !st)
        return st;
    return {};
  }

  status parallel(const yaml_field& f, const std::string& ctx, const std::string& path,
                  v1::BtNode& out) {
    out.set_type(v1::BT_PARALLEL);
    auto m = r_.yaml.map(f.value, f.mark(), ctx, {"success_threshold", "children"});
    if (!m) return m.error();
    const auto* kids = m->find("children");
    if (!kids) return r_.yaml.fail(m->mark, ctx, "missing 'children'; expected a list of nodes");
    if (auto st = children(*kids, ctx + ": children", path, out); !st) return st;
    if (const auto* t = m->find("success_threshold")) {
      auto n = r_.yaml.integer(*t, ctx, 0, 1'000'000);
      if (!n) return n.error();
      if (*n > out.children_size())
        return r_.yaml.fail(t->mark(), ctx + ": success_threshold",
                            std::to_string(*n) + " exceeds the number of children ("
                                + std::to_string(out.children_size()) + "); expected 0 (all) to "
                                + std::to_string(out.children_size()));
      out.set_success_threshold(static_cast<std::uint32_t>(*n));
    }
    return {};
  }

  status condition(const yaml_field& f, const std::string& ctx, v1::BtNode& out) {
    out.set_type(v1::BT_CONDITION);
    if (f.value.IsMap()) {
      auto m = r_.yaml.map(f.value, f.mark(), ctx, k_condition_keys);
      if (!m) return m.error();
      return call(*m, ctx, out);
    }
    auto text = r_.yaml.string(f, context_of(ctx));
    if (!text) return text.error();
    auto expr = single_expr(*text);
    if (!expr) return r_.yaml.fail(f.mark(), ctx, expr.error().message());
    auto refs = r_.expr_refs(*expr, f.mark(), ctx);
    if (!refs) return refs.error();
    pending_.push_back({ctx, std::move(*refs)});
    out.set_expr(*expr);
    return {};
  }

  status call(const yaml_map& m, const std::string& ctx, v1::BtNode& out) {
    auto c = read_call(r_, m, ctx, true);
    if (!c) return c.error();
    *out.mutable_call() = std::move(c->call);
    pending_.push_back({ctx + ": input", std::move(c->refs)});
    r_.outputs.insert(out.id());
    return {};
  }

  /// retry: {times, child} and timeout: {after, child}.
  status decorator(const yaml_field& f, const std::string& ctx, const std::string& path,
                   v1::BtNode& out) {
    const bool is_retry = f.name == "retry";
    const std::string_view setting = is_retry ? "times" : "after";
    out.set_type(is_retry ? v1::BT_RETRY : v1::BT_TIMEOUT);
    auto m = r_.yaml.map(f.value, f.mark(), ctx, {setting, "child"});
    if (!m) return m.error();
    const auto* s = m->find(setting);
    if (!s)
      return r_.yaml.fail(m->mark, ctx,
                          is_retry ? "missing 'times'; expected the number of attempts (>= 1)"
                                   : "missing 'after'; expected a duration such as 5s");
    if (is_retry) {
      auto n = r_.yaml.integer(*s, ctx, 1, 1'000'000);
      if (!n) return n.error();
      out.set_times(static_cast<std::uint32_t>(*n));
    } else {
      auto ms = r_.yaml.duration_ms(*s, ctx);
      if (!ms) return ms.error();
      if (*ms == 0)
        return r_.yaml.fail(s->mark(), ctx + ": after", "0 ms; expected a positive duration");
      out.set_after_ms(*ms);
    }
    const auto* child = m->find("child");
    if (!child) return r_.yaml.fail(m->mark, ctx, "missing 'child'; expected a node");
    return read(child->value, child->mark(), path + "/0", *out.add_children());
  }

  /// `ctx` without its last ": key", for readers that append the field name themselves.
  static std::string context_of(const std::string& ctx) { return ctx.substr(0, ctx.rfind(": ")); }

  plan_reader& r_;
  std::map<std::string, YAML::Mark> ids_;
  std::vector<pending_refs> pending_;
};

} // namespace

status read_bt(plan_reader& r, const yaml_map& spec) {
  const auto* root = spec.find("root");
  if (!root) return r.yaml.fail(spec.mark, "spec", "missing 'root'; expected a node");
  bt_reader reader{r};
  if (auto st = reader.read(root->value, root->mark(), "root", *r.ir->mutable_root()); !st)
    return st;
  return reader.check_refs();
}

} // namespace af::plan
