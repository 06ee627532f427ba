// Private: reading a StepRequest's JSON input and writing a StepOutput, with the validation
// errors the built-in agents and tool invokers share ("std.sleep: input.ms: ...").
#pragma once

#include "af/error.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace af::v1 {
class StepOutput;
} // namespace af::v1

namespace af::plan::detail {

/// Parses StepRequest.input_json; empty text is `null`. `who` prefixes errors ("std.echo",
/// "tool 'acme.wordcount'").
[[nodiscard]] expected<nlohmann::json> parse_input(std::string_view who, const std::string& text);

/// Like parse_input, and the input must be an object (`null` reads as `{}`).
[[nodiscard]] expected<nlohmann::json> parse_object_input(std::string_view who,
                                                          const std::string& text);

/// StepOutput{output_json = v as compact JSON}; invalid UTF-8 in strings becomes U+FFFD.
[[nodiscard]] v1::StepOutput make_output(const nlohmann::json& v);

/// "std.sleep: input.ms: expected a non-negative integer, got \"x\"".
[[nodiscard]] error field_error(std::string_view who, std::string_view field,
                                std::string_view expected, const nlohmann::json* got);

/// The optional fields of an input object, each checked: nullopt when absent or null, an
/// error naming the field when of the wrong type.
[[nodiscard]] expected<std::optional<std::int64_t>>
int_field(std::string_view who, const nlohmann::json& in, const char* field);
[[nodiscard]] expected<std::optional<std::string>>
string_field(std::string_view who, const nlohmann::json& in, const char* field);
[[nodiscard]] expected<std::optional<bool>> bool_field(std::string_view who,
                                                       const nlohmann::json& in, const char* field);

} // namespace af::plan::detail
