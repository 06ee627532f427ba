// Internals of the plan compiler shared by compile.cpp and the readers of each plan type
// (dag_reader.cpp, fsm_reader.cpp, bt_reader.cpp): the state of compiling one plan file, calls,
// and the references templates make (${steps.X}, ${inputs.X}, ${item}) with where they are.
#pragma once

#include "af/plan/compile.hpp"
#include "af/v1/plan.pb.h"
#include "plan/yaml_reader.hpp"

#include <array>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace af::plan {

/// One reference in a template, with the mark of the string that holds it.
struct located_ref {
  enum class kind : unsigned char { step, input, item, step_input };
  kind what = kind::step;
  std::string name; ///< step id or input name; empty for item
  YAML::Mark mark;
};

/// A call read from a step, state or BT node, and the references its input makes.
struct call_read {
  v1::Call call;
  std::vector<located_ref> refs;
};

/// Compiling one plan file (sub-plans get a reader of their own).
struct plan_reader {
  explicit plan_reader(yaml_reader y) : yaml(std::move(y)) {}

  yaml_reader yaml;
  compile_options opts;
  std::filesystem::path dir;            ///< where relative `plan: FILE` paths are looked up
  std::vector<std::string> chain;       ///< canonical paths: the including files, then this one
  std::vector<std::string> chain_names; ///< the same files as errors name them
  std::set<std::string> inputs;         ///< declared input names
  std::set<std::string> outputs;        ///< ids ${steps.ID.output} may name (steps/states/nodes)
  bool step_inputs_allowed = false;     ///< ${steps.ID.input} (saga plans only)
  v1::PlanIR* ir = nullptr;
  std::map<std::string, std::uint32_t> sub_plan_index; ///< sub-plan hash -> index

  /// Every reference in the strings of `node` (checked for syntax).
  [[nodiscard]] expected<std::vector<located_ref>>
  template_refs(const YAML::Node& node, const YAML::Mark& where, std::string_view context) const;
  /// The references of one bare expression (for_each, a BT condition) written at `mark`.
  [[nodiscard]] expected<std::vector<located_ref>>
  expr_refs(std::string_view expr, const YAML::Mark& mark, std::string_view context) const;
  /// Rejects references to unknown inputs or to steps outside `outputs`, and `${item}` unless
  /// `item_allowed`.
  [[nodiscard]] status check_refs(const std::vector<located_ref>& refs, std::string_view context,
                                  bool item_allowed) const;
  void set_pos(v1::SourcePos* pos, const YAML::Mark& mark) const;
};

/// The keys that say what a call does; a step, state or node has at most one of them.
inline constexpr std::array<std::string_view, 5> k_all_call_kinds = {"agent", "tool", "plan",
                                                                     "wait", "approval"};

/// Reads agent|tool|plan|wait|approval, node, input, retry and timeout from `m` (its keys
/// already checked). Without a kind: STEP_NONE if `kind_required` is false, else an error.
[[nodiscard]] expected<call_read> read_call(plan_reader& r, const yaml_map& m,
                                            std::string_view context, bool kind_required);

/// Compiles the plan `plan: FILE` names (compile.cpp) and returns its index in r.ir->sub_plans.
[[nodiscard]] expected<std::uint32_t> add_sub_plan(plan_reader& r, const yaml_field& f,
                                                   std::string_view context,
                                                   const nlohmann::json& input);

/// The per-type readers fill `r.ir` from the spec map (keys already checked) and `r.outputs`.
[[nodiscard]] status read_dag(plan_reader& r, const yaml_map& spec);
[[nodiscard]] status read_fsm(plan_reader& r, const yaml_map& spec);
[[nodiscard]] status read_bt(plan_reader& r, const yaml_map& spec);
[[nodiscard]] status read_saga(plan_reader& r, const yaml_map& spec);

/// "a, b, c", or "(none)".
[[nodiscard]] std::string join_names(const std::set<std::string>& names);

} // namespace af::plan
