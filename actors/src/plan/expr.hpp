// Expressions and input templates of plans: `${inputs.x}`, `${steps.ID.output.path}`,
// `${steps.ID.input.path}` (sagas), `${item}`, `${item.path}`. Paths are dot-separated keys or list
// indexes (`steps.a.output.items.0.name`). A JSON string that is exactly one `${...}` becomes the
// referenced value (any JSON type); a `${...}` inside longer text is replaced by the value's text
// (strings unquoted, others as JSON).
#pragma once

#include "af/error.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <set>
#include <string>
#include <string_view>

namespace af::plan {

/// What expressions can see while an execution runs.
struct expr_scope {
  const nlohmann::json* inputs = nullptr;
  /// The output of a completed step by id, or nullptr when that step has not completed.
  std::function<const nlohmann::json*(std::string_view step_id)> step_output;
  /// The rendered input of a completed step by id (saga plans keep them), else nullptr.
  std::function<const nlohmann::json*(std::string_view step_id)> step_input;
  const nlohmann::json* item = nullptr; ///< inside a fan-out branch, else nullptr
};

/// Evaluates one expression without the `${ }` ("inputs.x", "steps.a.output", "item").
/// Errors (`validation`) name the expression and the part that did not resolve.
[[nodiscard]] expected<nlohmann::json> eval(std::string_view expr, const expr_scope& scope);

/// Replaces every reference in the string values of `tmpl` (recursively through objects and
/// arrays; keys are left alone).
[[nodiscard]] expected<nlohmann::json> render(const nlohmann::json& tmpl,
                                              const expr_scope& scope);

/// Every reference in `tmpl` (or in one expression string "${...}" / "steps.a.output"),
/// checked for syntax: the step ids it reads (`steps.ID...`), whether it reads `item`, and the
/// input names (`inputs.NAME`). Used by the compiler to add implicit dependencies and to reject
/// references to unknown steps or inputs.
struct references {
  std::set<std::string> steps;       ///< every step read, by output or input
  std::set<std::string> step_inputs; ///< the steps read by `steps.ID.input`
  std::set<std::string> inputs;
  bool item = false;
};
[[nodiscard]] expected<references> scan(const nlohmann::json& tmpl);
[[nodiscard]] expected<references> scan_expr(std::string_view expr);

/// The one expression `text` holds, without `${ }` and surrounding blanks: "${steps.a.output}"
/// and "steps.a.output" both give "steps.a.output". Text around or between references is an
/// error. The compiler stores for_each and BT conditions in this form; eval accepts both.
[[nodiscard]] expected<std::string> single_expr(std::string_view text);

/// Truthiness of a condition's value: false, null, 0, "" , "false", [] and {} are false.
[[nodiscard]] bool truthy(const nlohmann::json& v);

} // namespace af::plan
