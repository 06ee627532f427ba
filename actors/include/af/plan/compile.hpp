// The plan compiler: YAML plan files (apiVersion agentflow/v1, kind Plan; docs/planning.md) to the
// Protobuf plan IR (af.v1.PlanIR), with validation errors that name file:line:column and what was
// expected, DAG ordering by Kahn's algorithm, and a deterministic plan hash.
#pragma once

#include "af/error.hpp"

#include <filesystem>
#include <string>
#include <string_view>

namespace af::v1 {
class PlanIR;
} // namespace af::v1

namespace af::plan {

struct compile_options {
  /// Where `plan: FILE` sub-plans are looked up when FILE is relative; empty: the directory of
  /// the file being compiled (the current directory for compile_text).
  std::filesystem::path base_dir;
  /// Sub-plans nest at most this deep (a plan that includes itself is an error before that).
  int max_depth = 16;
};

/// Compiles a plan file. Errors are `validation` ("plan.yaml:12:5: step 'b': unknown key
/// 'aftr' (expected one of: ...)") or `not_found` for a missing file.
[[nodiscard]] expected<v1::PlanIR> compile_file(const std::filesystem::path& file,
                                                const compile_options& opts = {});
/// Compiles YAML text; `source` names it in errors (e.g. "plan.yaml" or "<stdin>").
[[nodiscard]] expected<v1::PlanIR> compile_text(std::string_view yaml, std::string source,
                                                const compile_options& opts = {});

/// The plan hash: SHA-256 over the canonical serialization of `ir` with every `pos`, `source` and
/// `hash` field cleared (sub-plans included). compile_* store it in PlanIR.hash.
[[nodiscard]] std::string plan_hash(const v1::PlanIR& ir);
/// Lower-case hex of PlanIR.hash (the form `af exec show` prints).
[[nodiscard]] std::string plan_hash_hex(const v1::PlanIR& ir);

/// The inputs an execution of `plan` starts with: `given` (a JSON object, empty = {}) with the
/// plan's defaults applied. An input the plan does not declare, a missing required one or
/// `given` not being an object is a validation error naming it.
[[nodiscard]] expected<std::string> resolve_inputs(const v1::PlanIR& plan, const std::string& given);

} // namespace af::plan
