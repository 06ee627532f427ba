// `spec.type: saga`: ordered steps, each an action with the call that undoes it (`compensate`,
// or `compensate: none`). References may only look back: an action reads earlier steps, a
// compensation its own step and earlier ones, with `${steps.ID.input}` as well as `.output`.
#include "plan/plan_reader.hpp"

#include <array>
#include <map>
#include <utility>

namespace af::plan {

namespace {

constexpr std::array<std::string_view, 11> k_saga_step_keys = {
    "id",   "agent", "tool",  "plan",    "wait",      "approval",
    "node", "input", "retry", "timeout", "compensate"};
constexpr std::array<std::string_view, 9> k_compensate_keys = {
    "agent", "tool", "plan", "wait", "approval", "node", "input", "retry", "timeout"};

/// A compensation runs until it succeeds: its retry block sets the backoff only.
status check_compensate_retry(const plan_reader& r, const yaml_map& m, const std::string& ctx) {
  const auto* f = m.find("retry");
  if (!f || !f->value.IsMap()) return {};
  for (const auto& kv : f->value)
    if (kv.first.IsScalar() && kv.first.Scalar() == "max_attempts")
      return r.yaml.fail(kv.first.Mark(), ctx + ": retry",
                         "max_attempts: a compensation is retried until it succeeds (or an "
                         "operator marks the saga stuck); expected backoff, max_backoff or "
                         "multiplier");
  return {};
}

/// References of `refs` must name `self` (when allowed) or a step declared before it.
status check_order(const plan_reader& r, const std::vector<located_ref>& refs,
                   const std::map<std::string, std::size_t>& index_of, std::size_t self,
                   bool self_allowed, const std::string& id, const std::string& ctx) {
  for (const auto& ref : refs) {
    if (ref.what != located_ref::kind::step) continue;
    auto it = index_of.find(ref.name);
    if (it == index_of.end()) continue; // check_refs names the unknown step
    if (it->second < self || (self_allowed && it->second == self)) continue;
    const std::string what = it->second == self
                                 ? "step '" + id + "' itself"
                                 : "step '" + ref.name + "', which runs after '" + id + "'";
    return r.yaml.fail(ref.mark, ctx,
                       "${steps." + ref.name + "...} reads " + what + "; expected "
                           + (self_allowed ? "this step or a step before it"
                                           : "a step before it (steps run in order)"));
  }
  return {};
}

struct saga_source {
  std::string id;
  std::string context;
  YAML::Mark mark;
  call_read call;
  call_read compensate;
};

expected<saga_source> read_saga_step(plan_reader& r, const YAML::Node& node, std::size_t index,
                                     const YAML::Mark& list_mark) {
  auto context = "step " + std::to_string(index + 1);
  if (node.IsMap())
    if (auto id = node["id"]; id.IsDefined() && id.IsScalar() && valid_id(id.Scalar()))
      context = "step '" + id.Scalar() + "'";
  auto raw = r.yaml.map(node, list_mark, context);
  if (!raw) return std::move(raw).error();
  saga_source s;
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
  if (auto st = r.yaml.check_keys(*raw, s.context, k_saga_step_keys); !st) return st.error();
  auto call = read_call(r, *raw, s.context, true);
  if (!call) return std::move(call).error();
  s.call = std::move(*call);

  const auto* comp = raw->find("compensate");
  if (!comp)
    return r.yaml.fail(raw->mark, s.context,
                       "missing 'compensate'; expected the call that undoes this step (agent, "
                       "tool, plan, wait or approval, with input, retry, timeout), or "
                       "'compensate: none' when there is nothing to undo");
  const std::string ctx = s.context + ": compensate";
  if (comp->value.IsScalar() && comp->value.Scalar() == "none") {
    s.compensate.call.set_kind(v1::STEP_NONE);
    s.compensate.call.set_input_json("{}");
    return s;
  }
  if (!comp->value.IsMap())
    return r.yaml.fail(comp->mark(), ctx,
                       "expected a map with agent, tool, plan, wait or approval, or 'none'; got "
                           + (comp->value.IsScalar() ? "'" + comp->value.Scalar() + "'"
                                                     : "a " + std::string{node_kind(comp->value)}));
  auto m = r.yaml.map(comp->value, comp->mark(), ctx, k_compensate_keys);
  if (!m) return std::move(m).error();
  if (auto st = check_compensate_retry(r, *m, ctx); !st) return st.error();
  auto undo = read_call(r, *m, ctx, true);
  if (!undo) return std::move(undo).error();
  // No limit on attempts: the IR says so with 0, whatever the retry block's default was.
  undo->call.mutable_retry()->set_max_attempts(0);
  s.compensate = std::move(*undo);
  return s;
}

} // namespace

status read_saga(plan_reader& r, const yaml_map& spec) {
  r.step_inputs_allowed = true;
  const auto* f = spec.find("steps");
  if (!f) return r.yaml.fail(spec.mark, "spec", "missing 'steps'; expected a list of steps");
  if (!f->value.IsSequence() || f->value.size() == 0)
    return r.yaml.fail(f->mark(), "spec: steps",
                       "expected a non-empty list of steps, got "
                           + (f->value.IsSequence() ? std::string{"an empty list"}
                                                    : "a " + std::string{node_kind(f->value)}));
  std::vector<saga_source> steps;
  std::map<std::string, std::size_t> index_of;
  for (std::size_t i = 0; i < f->value.size(); ++i) {
    auto s = read_saga_step(r, f->value[i], i, f->mark());
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
  for (std::size_t i = 0; i < steps.size(); ++i) {
    auto& s = steps[i];
    if (auto st = r.check_refs(s.call.refs, s.context + ": input", false); !st) return st;
    if (auto st = check_order(r, s.call.refs, index_of, i, false, s.id, s.context + ": input"); !st)
      return st;
    const auto ctx = s.context + ": compensate: input";
    if (auto st = r.check_refs(s.compensate.refs, ctx, false); !st) return st;
    if (auto st = check_order(r, s.compensate.refs, index_of, i, true, s.id, ctx); !st) return st;
    auto* out = r.ir->add_saga();
    out->set_id(s.id);
    *out->mutable_call() = std::move(s.call.call);
    *out->mutable_compensate() = std::move(s.compensate.call);
    r.set_pos(out->mutable_pos(), s.mark);
  }
  return {};
}

} // namespace af::plan
