// What every plan type shares (plan_reader.hpp): calls with their input, retry and timeout, and
// the checking of the references templates make.
#include "plan/plan_reader.hpp"

#include "plan/expr.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

namespace af::plan {

namespace {

constexpr std::int64_t k_default_backoff_ms = 100;
constexpr std::int64_t k_default_max_backoff_ms = 60'000;
constexpr double k_default_multiplier = 2.0;

void locate(const references& refs, const YAML::Mark& mark, std::vector<located_ref>& out) {
  for (const auto& s : refs.steps)
    out.push_back({located_ref::kind::step, s, mark});
  for (const auto& s : refs.step_inputs)
    out.push_back({located_ref::kind::step_input, s, mark});
  for (const auto& i : refs.inputs)
    out.push_back({located_ref::kind::input, i, mark});
  if (refs.item) out.push_back({located_ref::kind::item, {}, mark});
}

status collect_refs(const plan_reader& r, const YAML::Node& node, const YAML::Mark& where,
                    std::string_view context, std::vector<located_ref>& out) {
  auto mark = node.Mark().is_null() ? where : node.Mark();
  if (node.IsScalar()) {
    auto refs = scan(nlohmann::json(node.Scalar()));
    if (!refs) return r.yaml.fail(mark, context, refs.error().message());
    locate(*refs, mark, out);
    return {};
  }
  if (node.IsSequence() || node.IsMap())
    for (const auto& child : node) {
      const auto& value = node.IsMap() ? child.second : child;
      if (auto st = collect_refs(r, value, mark, context, out); !st) return st;
    }
  return {};
}

/// RetryPolicy with the effective values, so that spelling out a default does not change the
/// plan hash. Without `retry`: one attempt.
expected<v1::RetryPolicy> read_retry(const plan_reader& r, const yaml_field* f,
                                     const std::string& context) {
  v1::RetryPolicy out;
  out.set_max_attempts(1);
  out.set_backoff_ms(k_default_backoff_ms);
  out.set_max_backoff_ms(k_default_max_backoff_ms);
  out.set_multiplier(k_default_multiplier);
  if (!f) return out;
  auto ctx = context + ": retry";
  auto m = r.yaml.map(f->value, f->mark(), ctx,
                      {"max_attempts", "backoff", "max_backoff", "multiplier"});
  if (!m) return std::move(m).error();
  out.set_max_attempts(3);
  for (const auto& field : m->fields) {
    if (field.name == "max_attempts") {
      auto v = r.yaml.integer(field, ctx, 1, 1000);
      if (!v) return std::move(v).error();
      out.set_max_attempts(static_cast<std::uint32_t>(*v));
    } else if (field.name == "multiplier") {
      auto v = r.yaml.number(field, ctx, 1.0, 100.0);
      if (!v) return std::move(v).error();
      out.set_multiplier(*v);
    } else {
      auto v = r.yaml.duration_ms(field, ctx);
      if (!v) return std::move(v).error();
      if (field.name == "backoff")
        out.set_backoff_ms(*v);
      else
        out.set_max_backoff_ms(*v);
    }
  }
  if (out.max_backoff_ms() < out.backoff_ms())
    return r.yaml.fail(m->mark, ctx,
                       "max_backoff (" + std::to_string(out.max_backoff_ms())
                           + " ms) is shorter than backoff (" + std::to_string(out.backoff_ms())
                           + " ms); expected max_backoff >= backoff");
  return out;
}

/// The one kind key of `m`, or nullptr; two are an error.
expected<const yaml_field*> kind_field(const plan_reader& r, const yaml_map& m,
                                       const std::string& context) {
  const yaml_field* found = nullptr;
  for (const auto& f : m.fields) {
    if (std::find(k_all_call_kinds.begin(), k_all_call_kinds.end(), f.name)
        == k_all_call_kinds.end())
      continue;
    if (found)
      return r.yaml.fail(f.key.Mark(), context,
                         "both '" + found->name + "' and '" + f.name
                             + "' given; expected exactly one of agent, tool, plan, wait, "
                               "approval");
    found = &f;
  }
  return found;
}

expected<std::string> read_approval(const plan_reader& r, const yaml_field& f,
                                    const std::string& context) {
  auto ctx = context + ": approval";
  if (f.value.IsNull()) return std::string{"{}"};
  auto m = r.yaml.map(f.value, f.mark(), ctx, {"prompt"});
  if (!m) return std::move(m).error();
  auto out = nlohmann::json::object();
  if (const auto* prompt = m->find("prompt")) {
    auto text = r.yaml.string(*prompt, ctx);
    if (!text) return std::move(text).error();
    out["prompt"] = *text;
  }
  return canonical_json(out);
}

} // namespace

expected<std::vector<located_ref>> plan_reader::template_refs(const YAML::Node& node,
                                                              const YAML::Mark& where,
                                                              std::string_view context) const {
  std::vector<located_ref> out;
  if (auto st = collect_refs(*this, node, where, context, out); !st) return st.error();
  return out;
}

expected<std::vector<located_ref>> plan_reader::expr_refs(std::string_view expr,
                                                          const YAML::Mark& mark,
                                                          std::string_view context) const {
  auto refs = scan_expr(expr);
  if (!refs) return yaml.fail(mark, context, refs.error().message());
  std::vector<located_ref> out;
  locate(*refs, mark, out);
  return out;
}

status plan_reader::check_refs(const std::vector<located_ref>& refs, std::string_view context,
                               bool item_allowed) const {
  for (const auto& ref : refs) {
    switch (ref.what) {
    case located_ref::kind::input:
      if (!inputs.contains(ref.name))
        return yaml.fail(ref.mark, context,
                         "unknown input '" + ref.name + "' in ${inputs." + ref.name
                             + "}; expected one of the plan's inputs: " + join_names(inputs));
      break;
    case located_ref::kind::step:
      if (!outputs.contains(ref.name))
        return yaml.fail(ref.mark, context,
                         "unknown step '" + ref.name + "' in ${steps." + ref.name
                             + ".output}; expected one of: " + join_names(outputs));
      break;
    case located_ref::kind::step_input:
      // The step itself is checked by its kind::step entry.
      if (!step_inputs_allowed)
        return yaml.fail(ref.mark, context,
                         "${steps." + ref.name
                             + ".input}: step inputs can only be read in saga plans; expected "
                               "${steps."
                             + ref.name + ".output}");
      break;
    case located_ref::kind::item:
      if (!item_allowed)
        return yaml.fail(ref.mark, context,
                         "${item} is only allowed in the input of a step with for_each");
      break;
    }
  }
  return {};
}

void plan_reader::set_pos(v1::SourcePos* pos, const YAML::Mark& mark) const {
  pos->set_file(yaml.file());
  if (mark.is_null()) return;
  pos->set_line(static_cast<std::uint32_t>(mark.line + 1));
  pos->set_column(static_cast<std::uint32_t>(mark.column + 1));
}

std::string join_names(const std::set<std::string>& names) {
  if (names.empty()) return "(none)";
  std::string out;
  for (const auto& n : names)
    out += (out.empty() ? "" : ", ") + n;
  return out;
}

expected<call_read> read_call(plan_reader& r, const yaml_map& m, std::string_view context_view,
                              bool kind_required) {
  const std::string context{context_view};
  call_read out;
  auto& call = out.call;

  auto input = nlohmann::json::object();
  if (const auto* f = m.find("input"); f && !f->value.IsNull()) {
    auto ctx = context + ": input";
    if (!f->value.IsMap())
      return r.yaml.fail(f->mark(), ctx,
                         "expected a map, got a " + std::string{node_kind(f->value)});
    auto v = r.yaml.json(f->value, f->mark(), ctx);
    if (!v) return std::move(v).error();
    input = std::move(*v);
    auto refs = r.template_refs(f->value, f->mark(), ctx);
    if (!refs) return std::move(refs).error();
    out.refs = std::move(*refs);
  }
  call.set_input_json(canonical_json(input));

  auto retry = read_retry(r, m.find("retry"), context);
  if (!retry) return std::move(retry).error();
  *call.mutable_retry() = std::move(*retry);
  if (const auto* f = m.find("timeout")) {
    auto ms = r.yaml.duration_ms(*f, context);
    if (!ms) return std::move(ms).error();
    call.set_timeout_ms(*ms);
  }

  auto kind = kind_field(r, m, context);
  if (!kind) return std::move(kind).error();
  const yaml_field* f = *kind;
  if (const auto* n = m.find("node")) {
    if (!f || (f->name != "agent" && f->name != "tool"))
      return r.yaml.fail(n->key.Mark(), context,
                         "node: only an agent or tool call runs on another node; expected node "
                         "with agent or tool");
    auto node = r.yaml.string(*n, context + ": node");
    if (!node) return std::move(node).error();
    const bool ok = !node->empty() && node->size() <= 128
                    && std::all_of(node->begin(), node->end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'
                                || c == '-' || c == '.';
                       });
    if (!ok)
      return r.yaml.fail(n->mark(), context + ": node",
                         "'" + *node + "': expected a node name of 1 to 128 of [A-Za-z0-9_.-]");
    call.set_node(*node);
  }
  if (!f) {
    if (kind_required)
      return r.yaml.fail(m.mark, context,
                         "nothing to run; expected one of agent, tool, plan, wait, approval");
    call.set_kind(v1::STEP_NONE);
    return out;
  }
  if (f->name == "agent" || f->name == "tool") {
    auto target = r.yaml.string(*f, context);
    if (!target) return std::move(target).error();
    call.set_kind(f->name == "agent" ? v1::STEP_AGENT : v1::STEP_TOOL);
    call.set_target(*target);
  } else if (f->name == "plan") {
    auto index = add_sub_plan(r, *f, context, input);
    if (!index) return std::move(index).error();
    call.set_kind(v1::STEP_PLAN);
    call.set_sub_plan(*index);
  } else if (f->name == "wait") {
    if (const auto* t = m.find("timeout"))
      return r.yaml.fail(t->key.Mark(), context,
                         "timeout: a wait step has no timeout (its duration is the wait); "
                         "expected no timeout here");
    auto ms = r.yaml.duration_ms(*f, context);
    if (!ms) return std::move(ms).error();
    call.set_kind(v1::STEP_WAIT);
    call.set_wait_ms(*ms);
  } else {
    auto settings = read_approval(r, *f, context);
    if (!settings) return std::move(settings).error();
    call.set_kind(v1::STEP_APPROVAL);
    call.set_approval_json(std::move(*settings));
  }
  return out;
}

} // namespace af::plan
