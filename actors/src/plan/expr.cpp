// The expression language of plans (expr.hpp): parsing `${...}` templates and paths, resolving
// them against an execution's inputs, step outputs and fan-out item, and truthiness.
#include "plan/expr.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace af::plan {

namespace {

using nlohmann::json;

enum class root_kind : unsigned char { inputs, steps, item };

/// A checked reference: `inputs.NAME.path...`, `steps.ID.output.path...`,
/// `steps.ID.input.path...` or `item.path...`.
struct path_expr {
  root_kind root = root_kind::item;
  bool step_input = false;           ///< steps.ID.input rather than steps.ID.output
  std::string name;                  ///< the input name or the step id; empty for item
  std::vector<std::string> segments; ///< what follows NAME / ID.output / item
  std::string text;                  ///< the expression as written (trimmed), for error messages
};

/// A template split into literal text and references.
struct piece {
  bool is_expr = false;
  std::string text; ///< the literal text, or the expression inside `${ }`
};

constexpr std::string_view k_roots = "expected inputs.NAME, steps.ID.output or item";

std::string_view trim(std::string_view s) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && blank(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && blank(s.back()))
    s.remove_suffix(1);
  return s;
}

std::string quoted(std::string_view expr) { return "${" + std::string{expr} + "}"; }

error expr_error(std::string_view expr, std::string_view what) {
  return validation_error(quoted(expr) + ": " + std::string{what});
}

std::vector<std::string_view> split_dots(std::string_view s) {
  std::vector<std::string_view> out;
  for (;;) {
    auto dot = s.find('.');
    out.push_back(s.substr(0, dot));
    if (dot == std::string_view::npos) return out;
    s.remove_prefix(dot + 1);
  }
}

expected<path_expr> parse_path(std::string_view raw) {
  auto text = trim(raw);
  if (text.empty()) return expr_error(text, "empty expression; " + std::string{k_roots});
  auto parts = split_dots(text);
  if (std::any_of(parts.begin(), parts.end(), [](auto p) { return p.empty(); }))
    return expr_error(text, "empty path segment; expected names separated by single dots");
  path_expr out;
  out.text = std::string{text};
  std::size_t rest = 1;
  if (parts[0] == "inputs") {
    if (parts.size() < 2) return expr_error(text, "expected inputs.NAME");
    out.root = root_kind::inputs;
    out.name = std::string{parts[1]};
    rest = 2;
  } else if (parts[0] == "steps") {
    if (parts.size() < 3 || (parts[2] != "output" && parts[2] != "input"))
      return expr_error(text, "expected steps.ID.output[.path] or steps.ID.input[.path]");
    out.root = root_kind::steps;
    out.step_input = parts[2] == "input";
    out.name = std::string{parts[1]};
    rest = 3;
  } else if (parts[0] == "item") {
    out.root = root_kind::item;
  } else {
    return expr_error(text, "unknown root '" + std::string{parts[0]}
                                + "'; expected inputs, steps or item");
  }
  for (auto i = rest; i < parts.size(); ++i)
    out.segments.emplace_back(parts[i]);
  return out;
}

/// Splits a template; `$${` is a literal `${`.
expected<std::vector<piece>> split_template(std::string_view s) {
  std::vector<piece> out;
  std::string literal;
  std::size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 3, "$${") == 0) {
      literal += "${";
      i += 3;
    } else if (s.compare(i, 2, "${") == 0) {
      auto close = s.find('}', i + 2);
      if (close == std::string_view::npos)
        return validation_error("'" + std::string{s} + "': unclosed '${' at offset "
                                + std::to_string(i) + "; expected '}'");
      if (!literal.empty()) out.push_back({false, std::exchange(literal, {})});
      out.push_back({true, std::string{s.substr(i + 2, close - i - 2)}});
      i = close + 1;
    } else {
      literal += s[i++];
    }
  }
  if (!literal.empty()) out.push_back({false, std::move(literal)});
  return out;
}

std::string_view type_name(const json& v) {
  switch (v.type()) {
  case json::value_t::null:
    return "null";
  case json::value_t::boolean:
    return "bool";
  case json::value_t::string:
    return "string";
  case json::value_t::object:
    return "map";
  case json::value_t::array:
    return "list";
  default:
    return "number";
  }
}

std::optional<std::size_t> parse_index(std::string_view s) {
  if (s.empty() || s.size() > 9
      || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return static_cast<std::size_t>(std::stoul(std::string{s}));
}

/// Walks `segments` down from `v`; `where` describes `v` in errors ("step 'a' output").
expected<json> walk(const json& start, std::string where, const path_expr& p) {
  const json* v = &start;
  for (const auto& seg : p.segments) {
    if (v->is_object()) {
      auto it = v->find(seg);
      if (it == v->end()) return expr_error(p.text, where + " has no key '" + seg + "'");
      v = &*it;
    } else if (v->is_array()) {
      auto index = parse_index(seg);
      if (!index)
        return expr_error(p.text, where + " is a list; '" + seg + "' is not a list index");
      if (*index >= v->size())
        return expr_error(p.text, where + " has no index " + seg + " (a list of "
                                      + std::to_string(v->size()) + ")");
      v = &(*v)[*index];
    } else {
      return expr_error(p.text, where + " is a " + std::string{type_name(*v)}
                                    + ", not a map or list; cannot read '" + seg + "'");
    }
    where += "." + seg;
  }
  return *v;
}

expected<json> resolve(const path_expr& p, const expr_scope& scope) {
  switch (p.root) {
  case root_kind::inputs: {
    const json* in = scope.inputs;
    if (!in || !in->is_object() || !in->contains(p.name))
      return expr_error(p.text, "no input '" + p.name + "'");
    return walk((*in)[p.name], "input '" + p.name + "'", p);
  }
  case root_kind::steps: {
    if (p.step_input) {
      const json* in = scope.step_input ? scope.step_input(p.name) : nullptr;
      if (!in) return expr_error(p.text, "step '" + p.name + "' has not completed");
      return walk(*in, "step '" + p.name + "' input", p);
    }
    const json* out = scope.step_output ? scope.step_output(p.name) : nullptr;
    if (!out) return expr_error(p.text, "step '" + p.name + "' has not completed");
    return walk(*out, "step '" + p.name + "' output", p);
  }
  case root_kind::item:
    if (!scope.item) return expr_error(p.text, "no item here (only inside a for_each branch)");
    return walk(*scope.item, "item", p);
  }
  return internal_error("unknown expression root");
}

std::string text_of(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

expected<json> render_string(const std::string& s, const expr_scope& scope) {
  auto pieces = split_template(s);
  if (!pieces) return std::move(pieces).error();
  if (pieces->size() == 1 && pieces->front().is_expr) {
    auto p = parse_path(pieces->front().text);
    if (!p) return std::move(p).error();
    return resolve(*p, scope);
  }
  std::string out;
  for (const auto& piece : *pieces) {
    if (!piece.is_expr) {
      out += piece.text;
      continue;
    }
    auto p = parse_path(piece.text);
    if (!p) return std::move(p).error();
    auto v = resolve(*p, scope);
    if (!v) return std::move(v).error();
    out += text_of(*v);
  }
  return json(std::move(out));
}

void add_reference(references& refs, const path_expr& p) {
  switch (p.root) {
  case root_kind::inputs:
    refs.inputs.insert(p.name);
    break;
  case root_kind::steps:
    refs.steps.insert(p.name);
    if (p.step_input) refs.step_inputs.insert(p.name);
    break;
  case root_kind::item:
    refs.item = true;
    break;
  }
}

status scan_string(const std::string& s, references& refs) {
  auto pieces = split_template(s);
  if (!pieces) return std::move(pieces).error();
  for (const auto& piece : *pieces) {
    if (!piece.is_expr) continue;
    auto p = parse_path(piece.text);
    if (!p) return std::move(p).error();
    add_reference(refs, *p);
  }
  return {};
}

status scan_into(const json& v, references& refs) {
  if (v.is_string()) return scan_string(v.get_ref<const std::string&>(), refs);
  if (v.is_object() || v.is_array())
    for (const auto& child : v)
      if (auto st = scan_into(child, refs); !st) return st;
  return {};
}

} // namespace

expected<std::string> single_expr(std::string_view text) {
  auto t = trim(text);
  if (t.find("${") == std::string_view::npos) {
    auto p = parse_path(t);
    if (!p) return std::move(p).error();
    return std::move(p->text);
  }
  auto pieces = split_template(t);
  if (!pieces) return std::move(pieces).error();
  if (pieces->size() != 1 || !pieces->front().is_expr)
    return validation_error("'" + std::string{t}
                            + "': expected exactly one expression such as ${steps.ID.output}");
  auto p = parse_path(pieces->front().text);
  if (!p) return std::move(p).error();
  return std::move(p->text);
}

expected<json> eval(std::string_view expr, const expr_scope& scope) {
  auto bare = single_expr(expr);
  if (!bare) return std::move(bare).error();
  auto p = parse_path(*bare);
  if (!p) return std::move(p).error();
  return resolve(*p, scope);
}

expected<json> render(const json& tmpl, const expr_scope& scope) {
  if (tmpl.is_string()) return render_string(tmpl.get_ref<const std::string&>(), scope);
  if (tmpl.is_object()) {
    json out = json::object();
    for (const auto& [key, value] : tmpl.items()) {
      auto v = render(value, scope);
      if (!v) return v;
      out[key] = std::move(*v);
    }
    return out;
  }
  if (tmpl.is_array()) {
    json out = json::array();
    for (const auto& value : tmpl) {
      auto v = render(value, scope);
      if (!v) return v;
      out.push_back(std::move(*v));
    }
    return out;
  }
  return tmpl;
}

expected<references> scan(const json& tmpl) {
  references refs;
  if (auto st = scan_into(tmpl, refs); !st) return st.error();
  return refs;
}

expected<references> scan_expr(std::string_view expr) {
  references refs;
  if (expr.find("${") != std::string_view::npos) {
    if (auto st = scan_string(std::string{expr}, refs); !st) return st.error();
    return refs;
  }
  auto p = parse_path(expr);
  if (!p) return std::move(p).error();
  add_reference(refs, *p);
  return refs;
}

bool truthy(const json& v) {
  switch (v.type()) {
  case json::value_t::null:
    return false;
  case json::value_t::boolean:
    return v.get<bool>();
  case json::value_t::string: {
    const auto& s = v.get_ref<const std::string&>();
    return !s.empty() && s != "false";
  }
  case json::value_t::array:
  case json::value_t::object:
    return !v.empty();
  case json::value_t::number_integer:
    return v.get<std::int64_t>() != 0;
  case json::value_t::number_unsigned:
    return v.get<std::uint64_t>() != 0;
  case json::value_t::number_float:
    return v.get<double>() != 0.0;
  default:
    return true;
  }
}

} // namespace af::plan
