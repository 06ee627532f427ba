// af::feature_flags: a node's named feature switches (bool, int or string), read from many threads
// and replaced atomically when `features:` in the config file is reloaded.
#pragma once

#include "af/error.hpp"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>

namespace af {

/// The layer a configuration value came from, lowest precedence first. `reload` marks feature
/// flags replaced by `feature_flags::reload_from_file` after start. Shared with af::config.
enum class config_source : unsigned char { defaults, file, env, flag, reload };

/// "defaults", "file", "env", "flag", "reload".
[[nodiscard]] std::string_view to_string(config_source source) noexcept;

/// A flag's value; its YAML type decides the alternative (true/false, integer, anything else).
using feature_value = std::variant<bool, std::int64_t, std::string>;

/// One flag with the layer and place it came from ("file node.yaml:7:14", "env AF_FEATURES_X").
struct feature_entry {
  feature_value value;
  config_source source = config_source::defaults;
  std::string origin;
};

using feature_map = std::map<std::string, feature_entry, std::less<>>;

/// Types a plain (unquoted) scalar: true/false (any case YAML allows) -> bool, a decimal integer
/// that fits in 64 bits -> int, anything else -> string. Environment values and flags use it too.
[[nodiscard]] feature_value parse_feature_value(std::string_view text);

/// "bool", "int" or "string".
[[nodiscard]] std::string_view type_name(const feature_value& value) noexcept;

/// "true", "64", "fast".
[[nodiscard]] std::string to_string(const feature_value& value);

/// Flag names are 1-64 characters from [a-z0-9_], so that AF_FEATURES_<NAME> can address each.
[[nodiscard]] bool valid_feature_name(std::string_view name) noexcept;

class feature_flags {
public:
  feature_flags() : feature_flags(feature_map{}) {}
  /// Entries whose source is `flag` (command line) stay pinned over later reloads.
  explicit feature_flags(feature_map initial);

  feature_flags(const feature_flags&) = delete;
  feature_flags& operator=(const feature_flags&) = delete;

  /// not_found for an unknown flag, validation when the flag holds another type.
  [[nodiscard]] expected<bool> get_bool(std::string_view name) const;
  [[nodiscard]] expected<std::int64_t> get_int(std::string_view name) const;
  [[nodiscard]] expected<std::string> get_string(std::string_view name) const;

  /// The fallback when the flag is missing or of another type.
  [[nodiscard]] bool get_bool(std::string_view name, bool fallback) const;
  [[nodiscard]] std::int64_t get_int(std::string_view name, std::int64_t fallback) const;
  [[nodiscard]] std::string get_string(std::string_view name, std::string fallback) const;

  [[nodiscard]] bool contains(std::string_view name) const;

  /// An immutable snapshot of every flag; stays valid across reloads.
  [[nodiscard]] std::shared_ptr<const feature_map> entries() const;

  /// name -> textual value, for status output.
  [[nodiscard]] std::map<std::string, std::string> snapshot_strings() const;

  /// 0 at construction, +1 on every successful reload.
  [[nodiscard]] std::uint64_t version() const;

  /// Re-reads only the `features` section of `path`, applies AF_FEATURES_* from `env` on top and
  /// the command-line flags on top of that, then swaps the set in one step. On error the old set
  /// stays in place and the error is returned.
  [[nodiscard]] status reload_from_file(const std::filesystem::path& path,
                                        const std::map<std::string, std::string>& env);

private:
  struct state {
    feature_map flags;
    std::uint64_t version = 0;
  };

  [[nodiscard]] std::shared_ptr<const state> load() const;

  feature_map pinned_;
  mutable std::mutex state_mutex_; // guards the pointer only; readers copy it and let go
  std::shared_ptr<const state> state_;
  std::mutex reload_mutex_; // one reload at a time, so versions never skip or repeat
};

} // namespace af
