// The clients' history of a key-value store (docs/simulation.md, "The clients' history"): one
// record per completed or timed-out put / get / compare-and-set, as `af sim run --history`
// writes it in JSON lines and the linearizability checker (linearizability.hpp) reads it.
#pragma once

#include "af/error.hpp"

#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace af::sim {

enum class kv_op_kind : std::uint8_t { put, get, cas };

[[nodiscard]] std::string_view to_string(kv_op_kind k) noexcept;

/// One operation of one client, as its client saw it.
struct kv_op {
  std::uint32_t client = 0; ///< 0-based; each client issues one operation at a time
  kv_op_kind op = kv_op_kind::get;
  std::string key;
  /// put, cas: the value written; get: the value read (a missing key reads "").
  std::string value;
  /// cas only: the value the key must hold for the write to happen ("" = the key is absent).
  std::string expected;
  /// cas only, meaningful when `ret` is set: the comparison held and the value was replaced.
  bool ok = false;
  std::int64_t call = 0;           ///< virtual nanoseconds when the client issued it
  std::optional<std::int64_t> ret; ///< when it returned; empty: outcome unknown (timeout)

  friend bool operator==(const kv_op&, const kv_op&) = default;
};

/// One JSON line (no newline): {"client", "op", "key", "value", ["expected", "ok"], "call",
/// ["return"]}; `ok` is written for a cas only when its outcome is known.
[[nodiscard]] std::string to_json_line(const kv_op& op);

/// Reads JSON lines (empty lines skipped). Errors are `validation` and name `label`:line and
/// the field: a missing or mistyped field, an unknown field or op, `return` before `call`, a
/// cas without `expected`, or a client whose operation was issued before its previous known
/// operation returned (each client is sequential).
[[nodiscard]] expected<std::vector<kv_op>> read_history(std::istream& in, const std::string& label);
[[nodiscard]] expected<std::vector<kv_op>> parse_history(std::string_view text,
                                                         const std::string& label);

} // namespace af::sim
