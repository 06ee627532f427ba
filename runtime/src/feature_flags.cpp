// af::feature_flags: typed lookups on an immutable snapshot, and reloads that build a new
// snapshot off to the side and swap it in only when it is valid.
#include "af/feature_flags.hpp"

#include "af/config.hpp"

#include <algorithm>
#include <charconv>
#include <type_traits>

namespace af {

namespace {

template <class T>
constexpr std::string_view type_name_of() {
  if constexpr (std::is_same_v<T, bool>)
    return "bool";
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return "int";
  else
    return "string";
}

template <class T>
expected<T> typed(const feature_map& flags, std::string_view name) {
  auto i = flags.find(name);
  if (i == flags.end())
    return not_found_error("feature flag '" + std::string{name} + "' is not set");
  if (const T* v = std::get_if<T>(&i->second.value)) return *v;
  return validation_error("feature flag '" + std::string{name} + "' is "
                          + std::string{type_name(i->second.value)} + " ("
                          + to_string(i->second.value) + ", from " + i->second.origin + "), not "
                          + std::string{type_name_of<T>()});
}

} // namespace

std::string_view to_string(config_source source) noexcept {
  switch (source) {
  case config_source::defaults:
    return "defaults";
  case config_source::file:
    return "file";
  case config_source::env:
    return "env";
  case config_source::flag:
    return "flag";
  case config_source::reload:
    return "reload";
  }
  return "defaults";
}

feature_value parse_feature_value(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  // YAML's core schema allows "+5", std::from_chars does not.
  bool plus = text.starts_with('+');
  auto digits = plus ? text.substr(1) : text;
  if (digits.empty() || (plus && digits.starts_with('-'))) return std::string{text};
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec == std::errc{} && end == digits.data() + digits.size()) return n;
  return std::string{text};
}

std::string_view type_name(const feature_value& value) noexcept {
  return std::visit([](const auto& v) { return type_name_of<std::decay_t<decltype(v)>>(); }, value);
}

std::string to_string(const feature_value& value) {
  if (const bool* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  if (const std::int64_t* n = std::get_if<std::int64_t>(&value)) return std::to_string(*n);
  return std::get<std::string>(value);
}

bool valid_feature_name(std::string_view name) noexcept {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

feature_flags::feature_flags(feature_map initial) {
  for (const auto& [name, entry] : initial)
    if (entry.source == config_source::flag) pinned_.emplace(name, entry);
  state_ = std::make_shared<const state>(state{std::move(initial), 0});
}

std::shared_ptr<const feature_flags::state> feature_flags::load() const {
  std::lock_guard guard{state_mutex_};
  return state_;
}

expected<bool> feature_flags::get_bool(std::string_view name) const {
  return typed<bool>(load()->flags, name);
}

expected<std::int64_t> feature_flags::get_int(std::string_view name) const {
  return typed<std::int64_t>(load()->flags, name);
}

expected<std::string> feature_flags::get_string(std::string_view name) const {
  return typed<std::string>(load()->flags, name);
}

bool feature_flags::get_bool(std::string_view name, bool fallback) const {
  auto v = get_bool(name);
  return v ? *v : fallback;
}

std::int64_t feature_flags::get_int(std::string_view name, std::int64_t fallback) const {
  auto v = get_int(name);
  return v ? *v : fallback;
}

std::string feature_flags::get_string(std::string_view name, std::string fallback) const {
  auto v = get_string(name);
  return v ? std::move(v).value() : std::move(fallback);
}

bool feature_flags::contains(std::string_view name) const {
  auto s = load();
  return s->flags.find(name) != s->flags.end();
}

std::shared_ptr<const feature_map> feature_flags::entries() const {
  auto s = load();
  return {s, &s->flags}; // aliasing: keeps the whole snapshot alive
}

std::map<std::string, std::string> feature_flags::snapshot_strings() const {
  std::map<std::string, std::string> out;
  for (const auto& [name, entry] : load()->flags)
    out.emplace(name, to_string(entry.value));
  return out;
}

std::uint64_t feature_flags::version() const { return load()->version; }

status feature_flags::reload_from_file(const std::filesystem::path& path,
                                       const std::map<std::string, std::string>& env) {
  std::lock_guard reload_guard{reload_mutex_};
  auto loaded = config::load_features(path.string(), env);
  if (!loaded) return std::move(loaded).error();
  auto next = std::make_shared<state>();
  next->flags = std::move(loaded).value();
  for (auto& [name, entry] : next->flags) {
    entry.source = config_source::reload;
    entry.origin = "reload " + entry.origin;
  }
  for (const auto& [name, entry] : pinned_)
    next->flags.insert_or_assign(name, entry);
  next->version = load()->version + 1;
  std::lock_guard guard{state_mutex_};
  state_ = std::move(next);
  return {};
}

} // namespace af
