// The plan compiler's entry points (af/plan/compile.hpp): the document (apiVersion, kind,
// metadata, spec), inputs and outputs, sub-plans (`plan: FILE`, compiled recursively, embedded
// once each and ordered by hash) and the plan hash. The step types live in dag_reader.cpp,
// fsm_reader.cpp, bt_reader.cpp and saga_reader.cpp.
#include "af/plan/compile.hpp"

#include "af/v1/plan.pb.h"
#include "plan/plan_reader.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <utility>

namespace af::plan {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view k_api_version = "agentflow/v1";
constexpr std::string_view k_kind = "Plan";

bool valid_plan_name(std::string_view s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.';
  });
}

/// The file's text, or not_found / forbidden.
expected<std::string> read_text(const fs::path& file, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return not_found_error(what + " '" + file.string() + "' not found");
  if (!fs::is_regular_file(file, ec))
    return validation_error(what + " '" + file.string() + "' is not a regular file");
  std::ifstream in{file, std::ios::binary};
  if (!in) return make_error(errc::forbidden, what + " '" + file.string() + "' cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

plan_reader make_reader(std::string source, const compile_options& opts, fs::path dir,
                        std::vector<std::string> chain, std::vector<std::string> names) {
  plan_reader r{yaml_reader{std::move(source)}};
  r.opts = opts;
  r.dir = std::move(dir);
  r.chain = std::move(chain);
  r.chain_names = std::move(names);
  return r;
}

/// Every Call of `ir` (not of its sub-plans).
void for_each_call(v1::PlanIR& ir, const std::function<void(v1::Call&)>& fn) {
  for (auto& s : *ir.mutable_steps())
    fn(*s.mutable_call());
  for (auto& s : *ir.mutable_saga()) {
    fn(*s.mutable_call());
    fn(*s.mutable_compensate());
  }
  if (ir.has_fsm())
    for (auto& s : *ir.mutable_fsm()->mutable_states())
      fn(*s.mutable_call());
  std::function<void(v1::BtNode&)> visit = [&](v1::BtNode& n) {
    if (n.has_call()) fn(*n.mutable_call());
    for (auto& c : *n.mutable_children())
      visit(c);
  };
  if (ir.has_root()) visit(*ir.mutable_root());
}

/// Sub-plans were numbered as found; the order of map keys must not change the IR, so they are
/// stored sorted by hash and the calls renumbered.
void sort_sub_plans(v1::PlanIR& ir) {
  const auto n = static_cast<std::uint32_t>(ir.sub_plans_size());
  std::vector<std::uint32_t> order(n);
  for (std::uint32_t i = 0; i < n; ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(), [&](auto a, auto b) {
    return ir.sub_plans(static_cast<int>(a)).hash() < ir.sub_plans(static_cast<int>(b)).hash();
  });
  std::vector<std::uint32_t> new_index(n);
  google::protobuf::RepeatedPtrField<v1::PlanIR> sorted;
  for (std::uint32_t i = 0; i < n; ++i) {
    new_index[order[i]] = i;
    *sorted.Add() = std::move(*ir.mutable_sub_plans(static_cast<int>(order[i])));
  }
  ir.mutable_sub_plans()->Swap(&sorted);
  for_each_call(ir, [&](v1::Call& c) {
    if (c.kind() == v1::STEP_PLAN) c.set_sub_plan(new_index[c.sub_plan()]);
  });
}

expected<v1::PlanInput> read_input(const plan_reader& r, const yaml_field& f) {
  auto ctx = "input '" + f.name + "'";
  if (!valid_id(f.name))
    return r.yaml.fail(f.key.Mark(), ctx,
                       "invalid input name; expected 1 to 128 characters of [A-Za-z0-9_-]");
  v1::PlanInput in;
  in.set_name(f.name);
  if (!f.value.IsMap()) { // shorthand: the value is the default
    auto v = r.yaml.json(f.value, f.mark(), ctx);
    if (!v) return std::move(v).error();
    in.set_default_json(canonical_json(*v));
    return in;
  }
  auto m = r.yaml.map(f.value, f.mark(), ctx, {"default", "required", "description"});
  if (!m) return std::move(m).error();
  if (const auto* req = m->find("required")) {
    auto v = r.yaml.boolean(*req, ctx);
    if (!v) return std::move(v).error();
    in.set_required(*v);
  }
  const auto* def = m->find("default");
  if (def && in.required())
    return r.yaml.fail(def->key.Mark(), ctx,
                       "both a default and 'required: true'; expected one of them");
  if (!in.required()) {
    nlohmann::json v;
    if (def) {
      auto j = r.yaml.json(def->value, def->mark(), ctx + ": default");
      if (!j) return std::move(j).error();
      v = std::move(*j);
    }
    in.set_default_json(canonical_json(v));
  }
  if (const auto* d = m->find("description")) {
    auto text = r.yaml.string(*d, ctx);
    if (!text) return std::move(text).error();
    in.set_description(*text);
  }
  return in;
}

status read_inputs(plan_reader& r, const yaml_field& f) {
  if (f.value.IsNull()) return {};
  auto m = r.yaml.map(f.value, f.mark(), "spec: inputs");
  if (!m) return m.error();
  std::vector<v1::PlanInput> inputs;
  for (const auto& field : m->fields) {
    auto in = read_input(r, field);
    if (!in) return in.error();
    r.inputs.insert(field.name);
    inputs.push_back(std::move(*in));
  }
  std::sort(inputs.begin(), inputs.end(),
            [](const auto& a, const auto& b) { return a.name() < b.name(); });
  for (auto& in : inputs)
    *r.ir->add_inputs() = std::move(in);
  return {};
}

status read_outputs(plan_reader& r, const yaml_field& f) {
  constexpr std::string_view ctx = "spec: outputs";
  if (f.value.IsNull()) return {};
  if (!f.value.IsMap())
    return r.yaml.fail(f.mark(), ctx,
                       "expected a map of output names to templates, got a "
                           + std::string{node_kind(f.value)});
  auto v = r.yaml.json(f.value, f.mark(), ctx);
  if (!v) return v.error();
  auto refs = r.template_refs(f.value, f.mark(), ctx);
  if (!refs) return refs.error();
  if (auto st = r.check_refs(*refs, ctx, false); !st) return st;
  r.ir->set_outputs_json(canonical_json(*v));
  return {};
}

/// One required string field of `m` that must equal `want`.
status expect_value(const plan_reader& r, const yaml_map& m, std::string_view key,
                    std::string_view want) {
  const auto* f = m.find(key);
  if (!f)
    return r.yaml.fail(m.mark, {},
                       "missing '" + std::string{key} + "'; expected " + std::string{key} + ": "
                           + std::string{want});
  auto v = r.yaml.string(*f, {});
  if (!v) return v.error();
  if (*v != want) return r.yaml.fail(f->mark(), key, "'" + *v + "'; expected " + std::string{want});
  return {};
}

status read_metadata(plan_reader& r, const yaml_map& top) {
  const auto* f = top.find("metadata");
  if (!f) return r.yaml.fail(top.mark, {}, "missing 'metadata'; expected metadata: {name: NAME}");
  auto m = r.yaml.map(f->value, f->mark(), "metadata", {"name", "tenant", "description"});
  if (!m) return m.error();
  const auto* name = m->find("name");
  if (!name) return r.yaml.fail(m->mark, "metadata", "missing 'name'; expected the plan's name");
  auto text = r.yaml.string(*name, "metadata");
  if (!text) return text.error();
  if (!valid_plan_name(*text))
    return r.yaml.fail(name->mark(), "metadata: name",
                       "'" + *text + "'; expected 1 to 128 characters of [A-Za-z0-9_.-]");
  r.ir->set_name(*text);
  if (const auto* tenant = m->find("tenant")) {
    auto t = r.yaml.string(*tenant, "metadata");
    if (!t) return t.error();
    r.ir->set_tenant(*t);
  }
  if (const auto* d = m->find("description")) {
    if (!d->value.IsScalar())
      return r.yaml.fail(d->mark(), "metadata: description",
                         "expected a string, got a " + std::string{node_kind(d->value)});
  }
  return {};
}

status read_spec(plan_reader& r, const yaml_map& top) {
  const auto* f = top.find("spec");
  if (!f) return r.yaml.fail(top.mark, {}, "missing 'spec'; expected spec: {type: dag, ...}");
  auto spec = r.yaml.map(f->value, f->mark(), "spec");
  if (!spec) return spec.error();
  const auto* type = spec->find("type");
  if (!type)
    return r.yaml.fail(spec->mark, "spec", "missing 'type'; expected dag, fsm, bt or saga");
  auto t = r.yaml.string(*type, "spec");
  if (!t) return t.error();
  status st;
  if (*t == "dag") {
    r.ir->set_type(v1::PLAN_DAG);
    st = r.yaml.check_keys(*spec, "spec", {"type", "inputs", "outputs", "steps"});
  } else if (*t == "fsm") {
    r.ir->set_type(v1::PLAN_FSM);
    st = r.yaml.check_keys(*spec, "spec",
                           {"type", "inputs", "outputs", "initial", "max_transitions", "states"});
  } else if (*t == "bt") {
    r.ir->set_type(v1::PLAN_BT);
    st = r.yaml.check_keys(*spec, "spec", {"type", "inputs", "outputs", "root"});
  } else if (*t == "saga") {
    r.ir->set_type(v1::PLAN_SAGA);
    st = r.yaml.check_keys(*spec, "spec", {"type", "inputs", "outputs", "steps"});
  } else {
    return r.yaml.fail(type->mark(), "spec: type", "'" + *t + "'; expected dag, fsm, bt or saga");
  }
  if (!st) return st;
  if (const auto* in = spec->find("inputs"))
    if (st = read_inputs(r, *in); !st) return st;
  switch (r.ir->type()) {
  case v1::PLAN_DAG:
    st = read_dag(r, *spec);
    break;
  case v1::PLAN_FSM:
    st = read_fsm(r, *spec);
    break;
  case v1::PLAN_SAGA:
    st = read_saga(r, *spec);
    break;
  default:
    st = read_bt(r, *spec);
    break;
  }
  if (!st) return st;
  if (const auto* out = spec->find("outputs"))
    if (st = read_outputs(r, *out); !st) return st;
  return {};
}

expected<v1::PlanIR> compile_doc(std::string_view text, plan_reader r) {
  v1::PlanIR ir;
  r.ir = &ir;
  try {
    auto root = r.yaml.parse(text);
    if (!root) return std::move(root).error();
    if (root->IsNull())
      return r.yaml.fail(YAML::Mark::null_mark(), {},
                         "empty plan; expected a map with apiVersion, kind, metadata "
                         "and spec");
    auto top = r.yaml.map(*root, {}, {}, {"apiVersion", "kind", "metadata", "spec"});
    if (!top) return std::move(top).error();
    if (auto st = expect_value(r, *top, "apiVersion", k_api_version); !st) return st.error();
    if (auto st = expect_value(r, *top, "kind", k_kind); !st) return st.error();
    if (auto st = read_metadata(r, *top); !st) return st.error();
    if (auto st = read_spec(r, *top); !st) return st.error();
  } catch (const YAML::Exception& e) {
    return r.yaml.fail(e.mark, {}, e.msg);
  }
  ir.set_api_version(std::string{k_api_version});
  ir.set_source(r.yaml.file());
  sort_sub_plans(ir);
  ir.set_hash(plan_hash(ir));
  return ir;
}

/// The sub-plan's inputs must accept what the step passes.
status check_sub_inputs(const plan_reader& r, const yaml_field& f, const std::string& context,
                        const v1::PlanIR& sub, const nlohmann::json& input) {
  std::set<std::string> names;
  for (const auto& in : sub.inputs())
    names.insert(in.name());
  for (const auto& [key, value] : input.items())
    if (!names.contains(key))
      return r.yaml.fail(f.mark(), context + ": input",
                         "'" + key + "' is not an input of the sub-plan '" + sub.source()
                             + "'; expected one of: " + join_names(names));
  for (const auto& in : sub.inputs())
    if (in.required() && !input.contains(in.name()))
      return r.yaml.fail(f.mark(), context + ": input",
                         "missing '" + in.name() + "', a required input of the sub-plan '"
                             + sub.source() + "'");
  return {};
}

} // namespace

expected<std::uint32_t> add_sub_plan(plan_reader& r, const yaml_field& f,
                                     std::string_view context_view, const nlohmann::json& input) {
  const std::string context{context_view};
  auto name = r.yaml.string(f, context);
  if (!name) return std::move(name).error();
  fs::path path{*name};
  if (path.is_relative()) path = r.dir / path;
  path = path.lexically_normal();
  std::error_code ec;
  if (!fs::exists(path, ec))
    return not_found_error(r.yaml.at(f.mark()) + ": " + context + ": plan: file '" + *name
                           + "' not found (looked for " + path.string() + ")");
  auto key = fs::weakly_canonical(path, ec).string();
  if (auto it = std::find(r.chain.begin(), r.chain.end(), key); it != r.chain.end()) {
    std::string cycle;
    for (auto i = static_cast<std::size_t>(it - r.chain.begin()); i < r.chain_names.size(); ++i)
      cycle += r.chain_names[i] + " -> ";
    return r.yaml.fail(f.mark(), context + ": plan",
                       "include cycle: " + cycle + path.string()
                           + "; expected sub-plans that do not include themselves");
  }
  if (static_cast<int>(r.chain_names.size()) > r.opts.max_depth)
    return r.yaml.fail(f.mark(), context + ": plan",
                       "sub-plans nest deeper than " + std::to_string(r.opts.max_depth)
                           + " levels; expected at most " + std::to_string(r.opts.max_depth));
  auto text = read_text(path, "plan file");
  if (!text) return std::move(text).error();
  auto chain = r.chain;
  chain.push_back(key);
  auto names = r.chain_names;
  names.push_back(path.string());
  auto sub = compile_doc(*text, make_reader(path.string(), r.opts, path.parent_path(),
                                            std::move(chain), std::move(names)));
  if (!sub) return std::move(sub).error();
  if (auto st = check_sub_inputs(r, f, context, *sub, input); !st) return st.error();
  auto [it, fresh] =
      r.sub_plan_index.emplace(sub->hash(), static_cast<std::uint32_t>(r.ir->sub_plans_size()));
  if (fresh) *r.ir->add_sub_plans() = std::move(*sub);
  return it->second;
}

expected<v1::PlanIR> compile_file(const std::filesystem::path& file, const compile_options& opts) {
  auto text = read_text(file, "plan file");
  if (!text) return std::move(text).error();
  std::error_code ec;
  auto key = fs::weakly_canonical(file, ec).string();
  auto dir = opts.base_dir.empty() ? file.parent_path() : opts.base_dir;
  return compile_doc(*text, make_reader(file.string(), opts, dir, {key}, {file.string()}));
}

expected<v1::PlanIR> compile_text(std::string_view yaml, std::string source,
                                  const compile_options& opts) {
  auto names = std::vector<std::string>{source};
  return compile_doc(
      yaml, make_reader(std::move(source), opts, opts.base_dir, {"<text>"}, std::move(names)));
}

} // namespace af::plan
