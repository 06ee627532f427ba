// Reading plan YAML with positions (yaml-cpp stays behind this header and the compiler's files):
// maps with a fixed set of keys, typed scalars, durations and YAML-to-JSON conversion, each
// failing with a validation error "FILE:LINE:COL: context: what was wrong; expected ...".
#pragma once

#include "af/error.hpp"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace af::plan {

/// One `key: value` of a YAML map.
struct yaml_field {
  std::string name;
  YAML::Node key;
  YAML::Node value;
  /// Where the value is; an empty value (`key:`) has no mark of its own, so the key's.
  [[nodiscard]] YAML::Mark mark() const;
};

/// A map's fields in document order.
struct yaml_map {
  YAML::Mark mark;
  std::vector<yaml_field> fields;
  [[nodiscard]] const yaml_field* find(std::string_view name) const;
};

/// Reads nodes of one file; `file` prefixes every error.
class yaml_reader {
public:
  explicit yaml_reader(std::string file) : file_(std::move(file)) {}

  [[nodiscard]] const std::string& file() const { return file_; }
  /// "plan.yaml:3:7" (1-based), or just the file when the mark is null.
  [[nodiscard]] std::string at(const YAML::Mark& mark) const;
  /// validation_error("FILE:L:C: context: what").
  [[nodiscard]] error fail(const YAML::Mark& mark, std::string_view context,
                           std::string_view what) const;

  [[nodiscard]] expected<YAML::Node> parse(std::string_view text) const;

  /// `node` as a map with unique scalar keys; `where` is used when the node has no mark.
  [[nodiscard]] expected<yaml_map> map(const YAML::Node& node, const YAML::Mark& where,
                                       std::string_view context) const;
  /// Rejects keys of `m` outside `accepted`, listing them.
  [[nodiscard]] status check_keys(const yaml_map& m, std::string_view context,
                                  std::span<const std::string_view> accepted) const;
  [[nodiscard]] status check_keys(const yaml_map& m, std::string_view context,
                                  std::initializer_list<std::string_view> accepted) const {
    return check_keys(m, context, std::span{accepted.begin(), accepted.size()});
  }
  /// map() then check_keys().
  [[nodiscard]] expected<yaml_map> map(const YAML::Node& node, const YAML::Mark& where,
                                       std::string_view context,
                                       std::span<const std::string_view> accepted) const;
  [[nodiscard]] expected<yaml_map> map(const YAML::Node& node, const YAML::Mark& where,
                                       std::string_view context,
                                       std::initializer_list<std::string_view> accepted) const {
    return map(node, where, context, std::span{accepted.begin(), accepted.size()});
  }

  /// A non-empty scalar.
  [[nodiscard]] expected<std::string> string(const yaml_field& f, std::string_view context) const;
  [[nodiscard]] expected<std::int64_t> integer(const yaml_field& f, std::string_view context,
                                               std::int64_t min, std::int64_t max) const;
  [[nodiscard]] expected<double> number(const yaml_field& f, std::string_view context, double min,
                                        double max) const;
  [[nodiscard]] expected<bool> boolean(const yaml_field& f, std::string_view context) const;
  /// Integer milliseconds or "250ms", "1.5s", "2m", "1h".
  [[nodiscard]] expected<std::int64_t> duration_ms(const yaml_field& f,
                                                   std::string_view context) const;
  /// The JSON value of a node: plain scalars typed by the YAML 1.2 core schema (null, bool,
  /// int, float, else string); quoted scalars are strings.
  [[nodiscard]] expected<nlohmann::json> json(const YAML::Node& node, const YAML::Mark& where,
                                              std::string_view context) const;

private:
  std::string file_;
};

/// "map", "list", "string" or "null", for "expected a map, got a list".
[[nodiscard]] std::string_view node_kind(const YAML::Node& node);

/// Milliseconds of "250" (a bare integer is milliseconds) or of any af::parse_duration text
/// ("250ms", "1.5s", "2m", "1h"); nullopt when malformed, negative, not a whole number of
/// milliseconds or beyond 10^12 ms.
[[nodiscard]] std::optional<std::int64_t> parse_duration_ms(std::string_view text);

/// The canonical JSON text of the IR: compact, keys sorted (nlohmann's default object is a
/// std::map), invalid UTF-8 replaced rather than thrown.
[[nodiscard]] std::string canonical_json(const nlohmann::json& v);

/// True for 1 to 128 characters of [A-Za-z0-9_-]: step ids, state and input names. The executor
/// derives ids like "id[3]" and "state#2", so '.', '/', '#' and '[' are out.
[[nodiscard]] bool valid_id(std::string_view id);

} // namespace af::plan
