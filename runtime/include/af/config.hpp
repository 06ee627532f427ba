// af::config: a node's layered configuration (built-in defaults < YAML file < AF_* environment <
// command-line flags), validated against one schema table, remembering where each value came from.
#pragma once

#include "af/error.hpp"
#include "af/feature_flags.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace af {

/// One command-line setting: key "node.listen" or "features.fast_path", its text, and the flag
/// that set it ("--listen") for error messages and origins.
struct config_override {
  std::string key;
  std::string value;
  std::string origin;
};

/// Everything a configuration is built from. The environment is passed in (see
/// `config::process_environment`) so that tests need not touch the real one.
struct config_sources {
  std::string file; // empty: no file
  std::map<std::string, std::string> env;
  std::vector<config_override> flags;
};

/// One row of the schema, for `af config --help`-style documentation.
struct config_key_doc {
  std::string key;           // "scheduler.threads"
  std::string type;          // "int 1..64", "enum stealing|sharing", "host:port", ...
  std::string default_value; // "2"
  std::string env_var;       // "AF_SCHEDULER_THREADS"
  std::string description;
};

class config {
public:
  using value_type = std::variant<std::string, std::int64_t, std::uint64_t>;

  struct entry {
    value_type value;
    std::string text; // the value as text, for any key type
    config_source source = config_source::defaults;
    std::string origin; // "default", "file node.yaml:3:7", "env AF_NODE_NAME", "flag --listen"
  };

  /// Applies the layers in order. Errors: not_found for a missing file; validation for
  /// unparseable YAML, unknown keys or variables, wrong types and out-of-range values, each naming
  /// where it happened (file:line:column, env variable or flag).
  [[nodiscard]] static expected<config> load(const config_sources& src);

  /// The built-in defaults only, with no feature flags.
  [[nodiscard]] static config defaults();

  /// A copy of the process environment (`environ`).
  [[nodiscard]] static std::map<std::string, std::string> process_environment();

  /// Only the `features` section of `file` (empty: none) plus AF_FEATURES_* variables of `env`;
  /// other sections and variables are not looked at. Used by `feature_flags::reload_from_file`.
  [[nodiscard]] static expected<feature_map>
  load_features(const std::string& file, const std::map<std::string, std::string>& env);

  /// The schema, in table order.
  [[nodiscard]] static std::vector<config_key_doc> schema();

  /// "node.name" -> "AF_NODE_NAME".
  [[nodiscard]] static std::string env_var_name(std::string_view key);

  /// Typed access to schema keys; an unknown key or a key of another type is a programming error
  /// (asserted; empty / 0 in release builds). Strings, enums and host:port values are strings.
  [[nodiscard]] const std::string& get_string(std::string_view key) const;
  [[nodiscard]] std::int64_t get_int(std::string_view key) const;
  [[nodiscard]] std::uint64_t get_uint(std::string_view key) const;
  /// The value of any schema key as text ("2" for scheduler.threads), for display.
  [[nodiscard]] const std::string& get_string_any(std::string_view key) const;

  /// The YAML file this configuration was loaded from; empty if none. Feature reloads re-read it.
  [[nodiscard]] const std::string& file() const { return file_; }

  /// Where the value of `key` (a schema key or "features.<name>") came from; "" if unknown.
  [[nodiscard]] std::string origin(std::string_view key) const;
  /// The layer of a schema key or "features.<name>"; defaults if unknown.
  [[nodiscard]] config_source source(std::string_view key) const;

  /// Shared by every copy of this config: a reload is seen by all of them.
  [[nodiscard]] const feature_flags& features() const { return *features_; }
  [[nodiscard]] std::shared_ptr<feature_flags> features_ptr() const { return features_; }

  /// {"node.name": {"value": "n1", "source": "file", "origin": "file node.yaml:2:9"}, ...,
  ///  "features": {"fast_path": {"value": true, "source": ..., "origin": ...}}}
  /// Include <nlohmann/json.hpp> to use the result.
  [[nodiscard]] nlohmann::json to_json() const;

private:
  config();

  [[nodiscard]] const entry* find(std::string_view key) const;

  std::string file_;
  std::map<std::string, entry, std::less<>> entries_;
  std::shared_ptr<feature_flags> features_;
};

} // namespace af
