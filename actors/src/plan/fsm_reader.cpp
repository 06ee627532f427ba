// `spec.type: fsm`: states that each run a call (or nothing) and move on by the outcome, checked
// for an existing initial state, existing targets, a final state and no dead ends.
#include "plan/plan_reader.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace af::plan {

namespace {

constexpr std::array<std::string_view, 11> k_state_keys = {"agent",    "tool", "plan",  "wait",
                                                           "approval", "node", "input", "retry",
                                                           "timeout",  "on",   "final"};

constexpr std::uint32_t k_default_max_transitions = 1000;

struct state_source {
  std::string context;
  yaml_field field;
  v1::FsmState state;
  std::vector<located_ref> refs;
  std::vector<std::pair<std::string, YAML::Mark>> targets;
};

expected<state_source> read_state(plan_reader& r, const yaml_field& f) {
  state_source s;
  s.field = f;
  s.context = "state '" + f.name + "'";
  if (!valid_id(f.name))
    return r.yaml.fail(f.key.Mark(), s.context,
                       "invalid state name; expected 1 to 128 characters of [A-Za-z0-9_-]");
  yaml_map m;
  m.mark = f.mark();
  if (!f.value.IsNull()) {
    auto read = r.yaml.map(f.value, f.mark(), s.context, k_state_keys);
    if (!read) return std::move(read).error();
    m = std::move(*read);
  }
  auto call = read_call(r, m, s.context, false);
  if (!call) return std::move(call).error();
  s.state.set_name(f.name);
  *s.state.mutable_call() = std::move(call->call);
  s.refs = std::move(call->refs);
  if (const auto* fin = m.find("final")) {
    auto v = r.yaml.boolean(*fin, s.context);
    if (!v) return std::move(v).error();
    s.state.set_final(*v);
  }
  if (const auto* on = m.find("on"); on && !on->value.IsNull()) {
    auto ctx = s.context + ": on";
    auto transitions = r.yaml.map(on->value, on->mark(), ctx);
    if (!transitions) return std::move(transitions).error();
    std::vector<v1::FsmTransition> sorted;
    for (const auto& t : transitions->fields) {
      auto next = r.yaml.string(t, ctx);
      if (!next) return std::move(next).error();
      v1::FsmTransition tr;
      tr.set_outcome(t.name);
      tr.set_next(*next);
      sorted.push_back(std::move(tr));
      s.targets.emplace_back(*next, t.mark());
    }
    std::sort(sorted.begin(), sorted.end(),
              [](const auto& a, const auto& b) { return a.outcome() < b.outcome(); });
    for (auto& tr : sorted)
      *s.state.add_on() = std::move(tr);
  }
  if (s.state.final() && s.state.on_size() > 0)
    return r.yaml.fail(m.mark, s.context,
                       "a final state has transitions; expected either 'final: true' or 'on'");
  if (!s.state.final() && s.state.on_size() == 0)
    return r.yaml.fail(m.mark, s.context,
                       "not final and no transitions; expected 'on: {OUTCOME: STATE}' or "
                       "'final: true'");
  r.set_pos(s.state.mutable_pos(), m.mark);
  return s;
}

} // namespace

status read_fsm(plan_reader& r, const yaml_map& spec) {
  const auto* states_field = spec.find("states");
  if (!states_field)
    return r.yaml.fail(spec.mark, "spec", "missing 'states'; expected a map of states");
  auto states_map = r.yaml.map(states_field->value, states_field->mark(), "spec: states");
  if (!states_map) return states_map.error();
  if (states_map->fields.empty())
    return r.yaml.fail(states_map->mark, "spec: states", "expected at least one state");

  std::vector<state_source> states;
  for (const auto& f : states_map->fields) {
    auto s = read_state(r, f);
    if (!s) return s.error();
    r.outputs.insert(f.name);
    states.push_back(std::move(*s));
  }

  auto* fsm = r.ir->mutable_fsm();
  const auto* initial = spec.find("initial");
  if (!initial)
    return r.yaml.fail(spec.mark, "spec",
                       "missing 'initial'; expected the name of the first state, one of: "
                           + join_names(r.outputs));
  auto initial_name = r.yaml.string(*initial, "spec");
  if (!initial_name) return initial_name.error();
  if (!r.outputs.contains(*initial_name))
    return r.yaml.fail(initial->mark(), "spec: initial",
                       "unknown state '" + *initial_name
                           + "'; expected one of: " + join_names(r.outputs));
  fsm->set_initial(*initial_name);

  fsm->set_max_transitions(k_default_max_transitions);
  if (const auto* f = spec.find("max_transitions")) {
    auto v = r.yaml.integer(*f, "spec", 1, 100'000'000);
    if (!v) return v.error();
    fsm->set_max_transitions(static_cast<std::uint32_t>(*v));
  }

  if (std::none_of(states.begin(), states.end(), [](const auto& s) { return s.state.final(); }))
    return r.yaml.fail(states_map->mark, "spec: states",
                       "no final state; expected at least one state with 'final: true'");
  for (const auto& s : states) {
    for (const auto& [next, mark] : s.targets)
      if (!r.outputs.contains(next))
        return r.yaml.fail(mark, s.context + ": on",
                           "unknown state '" + next
                               + "'; expected one of: " + join_names(r.outputs));
    if (auto st = r.check_refs(s.refs, s.context + ": input", false); !st) return st;
  }

  std::sort(states.begin(), states.end(),
            [](const auto& a, const auto& b) { return a.state.name() < b.state.name(); });
  for (auto& s : states)
    *fsm->add_states() = std::move(s.state);
  return {};
}

} // namespace af::plan
