// Plan YAML with positions (yaml_reader.hpp): marks to "file:line:col", typed scalars, durations
// and the conversion of `input` maps to canonical JSON.
#include "plan/yaml_reader.hpp"

#include "af/duration_text.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <utility>

namespace af::plan {

namespace {

using nlohmann::json;

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Quoted scalars (tag "!") and explicit !!str are strings whatever their text.
bool is_quoted(const YAML::Node& n) { return n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str"; }

std::optional<std::int64_t> parse_int(std::string_view s) {
  int base = 10;
  bool negative = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.starts_with("0x")) {
    base = 16;
    s.remove_prefix(2);
  } else if (s.starts_with("0o")) {
    base = 8;
    s.remove_prefix(2);
  }
  if (s.empty() || (base == 10 && !is_digits(s))) return std::nullopt;
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return negative ? -v : v;
}

/// YAML 1.2 core floats, finite only: "1.5", "-2e3", ".5".
std::optional<double> parse_float(std::string_view s) {
  auto body = s;
  if (!body.empty() && (body.front() == '-' || body.front() == '+')) body.remove_prefix(1);
  if (body.empty()
      || !(std::isdigit(static_cast<unsigned char>(body.front())) != 0
           || (body.front() == '.' && body.size() > 1)))
    return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

json plain_scalar(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (auto i = parse_int(s)) return *i;
  if (auto d = parse_float(s)) return *d;
  return s;
}

std::string prefix(std::string_view context) {
  return context.empty() ? std::string{} : std::string{context} + ": ";
}

std::string field_context(std::string_view context, const yaml_field& f) {
  return prefix(context) + f.name;
}

} // namespace

YAML::Mark yaml_field::mark() const {
  // yaml-cpp marks an empty value (`key:`) where the next token starts, often the next line.
  if (value.IsDefined() && !value.IsNull() && !value.Mark().is_null()) return value.Mark();
  return key.Mark();
}

const yaml_field* yaml_map::find(std::string_view name) const {
  auto it = std::find_if(fields.begin(), fields.end(),
                         [&](const yaml_field& f) { return f.name == name; });
  return it == fields.end() ? nullptr : &*it;
}

std::string_view node_kind(const YAML::Node& node) {
  switch (node.Type()) {
  case YAML::NodeType::Map:
    return "map";
  case YAML::NodeType::Sequence:
    return "list";
  case YAML::NodeType::Scalar:
    return "string";
  default:
    return "null";
  }
}

std::string yaml_reader::at(const YAML::Mark& mark) const {
  if (mark.is_null()) return file_;
  return file_ + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

error yaml_reader::fail(const YAML::Mark& mark, std::string_view context,
                        std::string_view what) const {
  return validation_error(at(mark) + ": " + prefix(context) + std::string{what});
}

expected<YAML::Node> yaml_reader::parse(std::string_view text) const {
  try {
    return YAML::Load(std::string{text});
  } catch (const YAML::Exception& e) {
    return fail(e.mark, {}, "invalid YAML: " + e.msg);
  }
}

expected<yaml_map> yaml_reader::map(const YAML::Node& node, const YAML::Mark& where,
                                    std::string_view context) const {
  auto mark = node.Mark().is_null() ? where : node.Mark();
  if (!node.IsMap())
    return fail(mark, context, "expected a map, got a " + std::string{node_kind(node)});
  yaml_map out;
  out.mark = mark;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      return fail(kv.first.Mark(), context,
                  "expected a key name, got a " + std::string{node_kind(kv.first)});
    const auto& name = kv.first.Scalar();
    if (const auto* first = out.find(name))
      return fail(kv.first.Mark(), context,
                  "duplicate key '" + name + "' (first at line "
                      + std::to_string(first->key.Mark().line + 1) + ")");
    out.fields.push_back({name, kv.first, kv.second});
  }
  return out;
}

status yaml_reader::check_keys(const yaml_map& m, std::string_view context,
                               std::span<const std::string_view> accepted) const {
  for (const auto& f : m.fields) {
    if (std::find(accepted.begin(), accepted.end(), f.name) != accepted.end()) continue;
    std::string list;
    for (auto a : accepted)
      list += (list.empty() ? "" : ", ") + std::string{a};
    return fail(f.key.Mark(), context,
                "unknown key '" + f.name + "' (expected one of: " + list + ")");
  }
  return {};
}

expected<yaml_map> yaml_reader::map(const YAML::Node& node, const YAML::Mark& where,
                                    std::string_view context,
                                    std::span<const std::string_view> accepted) const {
  auto m = map(node, where, context);
  if (!m) return m;
  if (auto st = check_keys(*m, context, accepted); !st) return st.error();
  return m;
}

expected<std::string> yaml_reader::string(const yaml_field& f, std::string_view context) const {
  if (!f.value.IsScalar() || f.value.Scalar().empty())
    return fail(f.mark(), field_context(context, f),
                "expected a non-empty string, got a " + std::string{node_kind(f.value)});
  return f.value.Scalar();
}

expected<std::int64_t> yaml_reader::integer(const yaml_field& f, std::string_view context,
                                            std::int64_t min, std::int64_t max) const {
  auto expectation = "expected an integer in " + std::to_string(min) + ".." + std::to_string(max);
  if (!f.value.IsScalar())
    return fail(f.mark(), field_context(context, f),
                expectation + ", got a " + std::string{node_kind(f.value)});
  auto v = parse_int(f.value.Scalar());
  if (!v || *v < min || *v > max)
    return fail(f.mark(), field_context(context, f), "'" + f.value.Scalar() + "': " + expectation);
  return *v;
}

expected<double> yaml_reader::number(const yaml_field& f, std::string_view context, double min,
                                     double max) const {
  std::optional<double> v;
  if (f.value.IsScalar() && !is_quoted(f.value))
    if (auto j = plain_scalar(f.value.Scalar()); j.is_number()) v = j.get<double>();
  if (!v || *v < min || *v > max)
    return fail(f.mark(), field_context(context, f),
                "expected a number in " + nlohmann::json(min).dump() + ".."
                    + nlohmann::json(max).dump());
  return *v;
}

expected<bool> yaml_reader::boolean(const yaml_field& f, std::string_view context) const {
  if (f.value.IsScalar() && !is_quoted(f.value)) {
    auto v = plain_scalar(f.value.Scalar());
    if (v.is_boolean()) return v.get<bool>();
  }
  return fail(f.mark(), field_context(context, f), "expected true or false");
}

expected<std::int64_t> yaml_reader::duration_ms(const yaml_field& f,
                                                std::string_view context) const {
  std::optional<std::int64_t> ms;
  if (f.value.IsScalar()) ms = parse_duration_ms(f.value.Scalar());
  if (!ms)
    return fail(f.mark(), field_context(context, f),
                (f.value.IsScalar() ? "'" + f.value.Scalar() + "': " : std::string{})
                    + "expected a duration: integer milliseconds or a number with a unit ms, s, "
                      "m or h (250ms, 1.5s, 2m)");
  return *ms;
}

expected<nlohmann::json> yaml_reader::json(const YAML::Node& node, const YAML::Mark& where,
                                           std::string_view context) const {
  auto mark = node.Mark().is_null() ? where : node.Mark();
  switch (node.Type()) {
  case YAML::NodeType::Scalar:
    return is_quoted(node) ? nlohmann::json(node.Scalar()) : plain_scalar(node.Scalar());
  case YAML::NodeType::Sequence: {
    auto out = nlohmann::json::array();
    for (const auto& item : node) {
      auto v = json(item, mark, context);
      if (!v) return v;
      out.push_back(std::move(*v));
    }
    return out;
  }
  case YAML::NodeType::Map: {
    auto m = map(node, mark, context);
    if (!m) return std::move(m).error();
    auto out = nlohmann::json::object();
    for (const auto& f : m->fields) {
      auto v = json(f.value, f.mark(), context);
      if (!v) return v;
      out[f.name] = std::move(*v);
    }
    return out;
  }
  default:
    return nlohmann::json(nullptr);
  }
}

std::optional<std::int64_t> parse_duration_ms(std::string_view text) {
  constexpr std::int64_t k_max = 1'000'000'000'000;
  constexpr std::int64_t k_ns_per_ms = 1'000'000;
  std::int64_t ms = 0;
  if (is_digits(text)) { // a bare integer is milliseconds
    if (text.size() > 13) return std::nullopt;
    ms = std::stoll(std::string{text});
  } else {
    auto d = af::parse_duration(text);
    if (!d || d->count() < 0 || d->count() % k_ns_per_ms != 0) return std::nullopt;
    ms = d->count() / k_ns_per_ms;
  }
  return ms <= k_max ? std::optional{ms} : std::nullopt;
}

std::string canonical_json(const nlohmann::json& v) {
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool valid_id(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
  });
}

} // namespace af::plan
