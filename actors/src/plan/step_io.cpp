// Step input/output helpers of the built-in agents and tool invokers.
#include "plan/step_io.hpp"

#include "af/v1/exec.pb.h"

#include <cmath>
#include <limits>

namespace af::plan::detail {

namespace {

/// The JSON text of `v`, shortened for messages.
std::string shown(const nlohmann::json& v) {
  auto s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  constexpr std::size_t k_max = 60;
  if (s.size() > k_max) s = s.substr(0, k_max) + "...";
  return s;
}

} // namespace

expected<nlohmann::json> parse_input(std::string_view who, const std::string& text) {
  if (text.empty()) return nlohmann::json{};
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // what() is "[json.exception.parse_error.101] parse error at line 1, column 2: ...".
    std::string_view why = e.what();
    if (auto close = why.find("] "); why.starts_with("[json.") && close != why.npos)
      why.remove_prefix(close + 2);
    return validation_error(std::string{who} + ": input_json: invalid JSON: " + std::string{why});
  }
}

expected<nlohmann::json> parse_object_input(std::string_view who, const std::string& text) {
  auto in = parse_input(who, text);
  if (!in) return in;
  if (in->is_null()) return nlohmann::json::object();
  if (!in->is_object()) return field_error(who, "input", "an object", &*in);
  return in;
}

v1::StepOutput make_output(const nlohmann::json& v) {
  v1::StepOutput out;
  out.set_output_json(v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  return out;
}

error field_error(std::string_view who, std::string_view field, std::string_view expected,
                  const nlohmann::json* got) {
  std::string msg =
      std::string{who} + ": " + std::string{field} + ": expected " + std::string{expected};
  if (got != nullptr) msg += ", got " + shown(*got);
  return validation_error(std::move(msg));
}

expected<std::optional<std::int64_t>> int_field(std::string_view who, const nlohmann::json& in,
                                                const char* field) {
  auto it = in.find(field);
  if (it == in.end() || it->is_null()) return std::optional<std::int64_t>{};
  constexpr auto k_max = std::numeric_limits<std::int64_t>::max();
  if (it->is_number_unsigned() && it->get<std::uint64_t>() <= static_cast<std::uint64_t>(k_max))
    return std::optional<std::int64_t>{static_cast<std::int64_t>(it->get<std::uint64_t>())};
  if (it->is_number_integer() && !it->is_number_unsigned())
    return std::optional<std::int64_t>{it->get<std::int64_t>()};
  // 3.0 is an integer written as a float: accept it.
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (d > -9.2e18 && d < 9.2e18 && d == std::trunc(d))
      return std::optional<std::int64_t>{static_cast<std::int64_t>(d)};
  }
  return field_error(who, "input." + std::string{field}, "an integer", &*it);
}

expected<std::optional<std::string>> string_field(std::string_view who, const nlohmann::json& in,
                                                  const char* field) {
  auto it = in.find(field);
  if (it == in.end() || it->is_null()) return std::optional<std::string>{};
  if (!it->is_string()) return field_error(who, "input." + std::string{field}, "a string", &*it);
  return std::optional<std::string>{it->get<std::string>()};
}

expected<std::optional<bool>> bool_field(std::string_view who, const nlohmann::json& in,
                                         const char* field) {
  auto it = in.find(field);
  if (it == in.end() || it->is_null()) return std::optional<bool>{};
  if (!it->is_boolean()) return field_error(who, "input." + std::string{field}, "a boolean", &*it);
  return std::optional<bool>{it->get<bool>()};
}

} // namespace af::plan::detail
