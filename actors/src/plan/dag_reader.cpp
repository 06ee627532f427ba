// `spec.type: dag`: steps with explicit and implicit (${steps.X}) dependencies, fan-out with
// for_each, ordered by Kahn's algorithm (dag_order.hpp); a cycle is an error that names it.
#include "plan/dag_order.hpp"
#include "plan/expr.hpp"
#include "plan/plan_reader.hpp"

#include <array>
#include <map>
#include <utility>

namespace af::plan {

namespace {

constexpr std::array<std::string_view, 12> k_step_keys = {"id",    "agent",    "tool",  "plan",
                                                          "wait",  "approval", "node",  "input",
                                                          "after", "for_each", "retry", "timeout"};

struct named_mark {
  std::string name;
  YAML::Mark mark;
};

/// A step as read, before its references are checked and the steps ordered.
struct step_source {
  std::string id;
  std::string context; ///< "step 'id'"
  YAML::Mark mark;
  call_read call;
  std::vector<named_mark> after;
  std::string for_each;
  std::vector<located_ref> for_each_refs;
};

expected<std::vector<named_mark>> read_after(const plan_reader& r, const yaml_field& f,
                                             const std::string& context) {
  auto ctx = context + ": after";
  std::vector<named_mark> out;
  auto expectation = [&](const YAML::Node& n) {
    return r.yaml.fail(n.Mark().is_null() ? f.mark() : n.Mark(), ctx,
                       "expected a list of step ids, got a " + std::string{node_kind(n)});
  };
  if (f.value.IsScalar()) { // `after: a` for `after: [a]`
    out.push_back({f.value.Scalar(), f.value.Mark()});
    return out;
  }
  if (!f.value.IsSequence()) return expectation(f.value);
  for (const auto& item : f.value) {
    if (!item.IsScalar()) return expectation(item);
    out.push_back({item.Scalar(), item.Mark()});
  }
  return out;
}

expected<step_source> read_step(plan_reader& r, const YAML::Node& node, std::size_t index,
                                const YAML::Mark& list_mark) {
  // Errors name the step by its id as soon as there is one, even for a map that fails to read.
  auto context = "step " + std::to_string(index + 1);
  if (node.IsMap())
    if (auto id = node["id"]; id.IsDefined() && id.IsScalar() && valid_id(id.Scalar()))
      context = "step '" + id.Scalar() + "'";
  auto raw = r.yaml.map(node, list_mark, context);
  if (!raw) return std::move(raw).error();
  step_source s;
  s.mark = raw->mark;
  const auto* id = raw->find("id");
  if (!id)
    return r.yaml.fail(raw->mark, "step " + std::to_string(index + 1),
                       "missing 'id'; expected an id made of [A-Za-z0-9_-]");
  auto id_text = r.yaml.string(*id, "step " + std::to_string(index + 1));
  if (!id_text) return std::move(id_text).error();
  if (!valid_id(*id_text))
    return r.yaml.fail(id->mark(), "step '" + *id_text + "'",
                       "invalid id; expected 1 to 128 characters of [A-Za-z0-9_-]");
  s.id = *id_text;
  s.context = "step '" + s.id + "'";
  if (auto st = r.yaml.check_keys(*raw, s.context, k_step_keys); !st) return st.error();

  auto call = read_call(r, *raw, s.context, true);
  if (!call) return std::move(call).error();
  s.call = std::move(*call);
  if (const auto* f = raw->find("after")) {
    auto after = read_after(r, *f, s.context);
    if (!after) return std::move(after).error();
    s.after = std::move(*after);
  }
  if (const auto* f = raw->find("for_each")) {
    auto ctx = s.context + ": for_each";
    auto text = r.yaml.string(*f, s.context);
    if (!text) return std::move(text).error();
    auto expr = single_expr(*text);
    if (!expr) return r.yaml.fail(f->mark(), ctx, expr.error().message());
    s.for_each = std::move(*expr);
    auto refs = r.expr_refs(s.for_each, f->mark(), ctx);
    if (!refs) return std::move(refs).error();
    s.for_each_refs = std::move(*refs);
    for (const auto& ref : s.for_each_refs)
      if (ref.what == located_ref::kind::item)
        return r.yaml.fail(ref.mark, ctx,
                           "a for_each cannot read ${item}; expected a list from "
                           "${inputs.NAME} or ${steps.ID.output}");
  }
  return s;
}

/// "a -> b -> c -> a" from step indexes.
std::string cycle_text(const std::vector<step_source>& steps, const std::vector<std::size_t>& c) {
  std::string out;
  for (auto i : c)
    out += steps[i].id + " -> ";
  return out + steps[c.front()].id;
}

} // namespace

status read_dag(plan_reader& r, const yaml_map& spec) {
  const auto* f = spec.find("steps");
  if (!f) return r.yaml.fail(spec.mark, "spec", "missing 'steps'; expected a list of steps");
  if (!f->value.IsSequence() || f->value.size() == 0)
    return r.yaml.fail(f->mark(), "spec: steps",
                       "expected a non-empty list of steps, got "
                           + (f->value.IsSequence() ? std::string{"an empty list"}
                                                    : "a " + std::string{node_kind(f->value)}));

  std::vector<step_source> steps;
  std::map<std::string, std::size_t> index_of;
  for (std::size_t i = 0; i < f->value.size(); ++i) {
    auto s = read_step(r, f->value[i], i, f->mark());
    if (!s) return s.error();
    if (auto it = index_of.find(s->id); it != index_of.end())
      return r.yaml.fail(s->mark, s->context,
                         "duplicate step id '" + s->id + "' (first at line "
                             + std::to_string(steps[it->second].mark.line + 1)
                             + "); expected unique ids");
    index_of.emplace(s->id, i);
    r.outputs.insert(s->id);
    steps.push_back(std::move(*s));
  }

  std::vector<std::vector<std::size_t>> after(steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const auto& s = steps[i];
    if (auto st = r.check_refs(s.call.refs, s.context + ": input", !s.for_each.empty()); !st)
      return st;
    if (auto st = r.check_refs(s.for_each_refs, s.context + ": for_each", false); !st) return st;
    for (const auto& a : s.after) {
      auto it = index_of.find(a.name);
      if (it == index_of.end())
        return r.yaml.fail(a.mark, s.context + ": after",
                           "unknown step '" + a.name
                               + "'; expected one of: " + join_names(r.outputs));
      after[i].push_back(it->second);
    }
    for (const auto* refs : {&s.call.refs, &s.for_each_refs})
      for (const auto& ref : *refs)
        if (ref.what == located_ref::kind::step) after[i].push_back(index_of.at(ref.name));
  }

  auto order = order_steps(after);
  if (!order.cycle.empty())
    return r.yaml.fail(steps[order.cycle.front()].mark, {},
                       "cycle: " + cycle_text(steps, order.cycle)
                           + "; expected the steps' after and ${steps.X} references to form a "
                             "DAG");

  for (auto i : order.order) {
    auto& s = steps[i];
    auto* step = r.ir->add_steps();
    step->set_id(s.id);
    *step->mutable_call() = std::move(s.call.call);
    std::set<std::string> names;
    for (auto a : after[i])
      names.insert(steps[a].id);
    for (const auto& n : names)
      step->add_after(n);
    step->set_for_each(s.for_each);
    r.set_pos(step->mutable_pos(), s.mark);
  }
  return {};
}

} // namespace af::plan
