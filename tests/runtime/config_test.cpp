// Tests af::config (layers, origins, every error path) and af::feature_flags (typed access,
// reloads, readers racing a reload).
#include "af/config.hpp"
#include "af/feature_flags.hpp"

#include "support/temp_dir.hpp"
#include <atomic>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;

/// Temp dirs of this file are named "af-config-test-<pid>-<n>".
struct temp_dir : af::test::temp_dir {
  temp_dir() : af::test::temp_dir("af-config-test") {}
};

using Catch::Matchers::Contains;

std::string error_of(const af::expected<af::config>& r) {
  REQUIRE_FALSE(r.has_value());
  return r.error().message();
}

af::expected<af::config> load_yaml(const temp_dir& dir, const std::string& yaml) {
  return af::config::load({dir.write("node.yaml", yaml), {}, {}});
}

af::expected<af::config> load_flag(const std::string& key, const std::string& value) {
  return af::config::load({{}, {}, {{key, value, "--" + key}}});
}

} // namespace

TEST_CASE("config: defaults come from the schema table", "[config]") {
  auto cfg = af::config::defaults();
  CHECK(cfg.get_string("node.name") == "af-node");
  CHECK(cfg.get_string("node.data_dir") == "data");
  CHECK(cfg.get_string("node.listen").empty());
  CHECK(cfg.get_string("metrics.listen").empty());
  CHECK(cfg.get_string("scheduler.policy") == "stealing");
  CHECK(cfg.get_int("scheduler.threads") == 2);
  CHECK(cfg.get_string("log.level") == "info");
  CHECK(cfg.get_string("log.format") == "auto");
  CHECK(cfg.get_string("log.file").empty());
  CHECK(cfg.get_int("envelope.max_payload_bytes") == 4194304);
  CHECK(cfg.get_int("agent.ask_timeout_ms") == 5000);
  CHECK(cfg.get_uint("rng.seed") == 0);
  CHECK(cfg.get_string_any("scheduler.threads") == "2");
  CHECK(cfg.get_string_any("rng.seed") == "0");
  CHECK(cfg.file().empty());
  CHECK(cfg.origin("node.name") == "default");
  CHECK(cfg.source("node.name") == af::config_source::defaults);
  CHECK(cfg.origin("no.such.key").empty());
  CHECK(cfg.features().entries()->empty());

  auto loaded = af::config::load({});
  REQUIRE(loaded);
  CHECK(loaded->to_json() == cfg.to_json());
}

TEST_CASE("config: schema documents every key with its env variable", "[config]") {
  auto rows = af::config::schema();
  // 27 + 12 cluster.* transport + 8 membership/placement + 4 raft + 5 execution takeover keys
  // (58 in all) + malloc.arena_max
  REQUIRE(rows.size() == 60);
  CHECK(rows.front().key == "node.name");
  CHECK(rows.front().env_var == "AF_NODE_NAME");
  CHECK(rows.front().default_value == "af-node");
  CHECK_FALSE(rows.front().description.empty());
  bool saw_threads = false;
  for (const auto& row : rows) {
    CHECK(row.env_var == af::config::env_var_name(row.key));
    if (row.key == "scheduler.threads") {
      saw_threads = true;
      CHECK(row.type == "int 1..64");
    }
  }
  CHECK(saw_threads);
  CHECK(af::config::env_var_name("envelope.max_payload_bytes") == "AF_ENVELOPE_MAX_PAYLOAD_BYTES");
}

TEST_CASE("config: precedence is defaults < file < env < flags, with origins", "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "node:\n"
                                     "  name: from-file\n"
                                     "  listen: 127.0.0.1:4000\n"
                                     "scheduler: {threads: 3}\n"
                                     "log:\n"
                                     "  level: debug\n");
  af::config_sources src;
  src.file = file;
  src.env = {{"AF_NODE_NAME", "from-env"},
             {"AF_LOG_LEVEL", "warn"},
             {"PATH", "/usr/bin"},
             {"HOME", "/root"}};
  src.flags = {{"node.name", "from-flag", "--name"}};
  auto cfg = af::config::load(src);
  REQUIRE(cfg);

  CHECK(cfg->file() == file);
  CHECK(cfg->get_string("node.name") == "from-flag");
  CHECK(cfg->source("node.name") == af::config_source::flag);
  CHECK(cfg->origin("node.name") == "flag --name");

  CHECK(cfg->get_string("log.level") == "warn");
  CHECK(cfg->source("log.level") == af::config_source::env);
  CHECK(cfg->origin("log.level") == "env AF_LOG_LEVEL");

  CHECK(cfg->get_string("node.listen") == "127.0.0.1:4000");
  CHECK(cfg->source("node.listen") == af::config_source::file);
  CHECK(cfg->origin("node.listen") == "file " + file + ":3:11");

  CHECK(cfg->get_int("scheduler.threads") == 3);
  CHECK(cfg->origin("scheduler.threads") == "file " + file + ":4:22");

  CHECK(cfg->get_string("log.format") == "auto");
  CHECK(cfg->source("log.format") == af::config_source::defaults);
  CHECK(cfg->origin("log.format") == "default");

  auto j = cfg->to_json();
  CHECK(j["node.name"]["value"] == "from-flag");
  CHECK(j["node.name"]["source"] == "flag");
  CHECK(j["node.name"]["origin"] == "flag --name");
  CHECK(j["scheduler.threads"]["value"] == 3);
  CHECK(j["rng.seed"]["value"] == 0);
  CHECK(j["features"].is_object());
}

TEST_CASE("config: flag without an origin is described by its key", "[config]") {
  auto cfg = af::config::load({{}, {}, {{"agent.ask_timeout_ms", "250", ""}}});
  REQUIRE(cfg);
  CHECK(cfg->get_int("agent.ask_timeout_ms") == 250);
  CHECK(cfg->origin("agent.ask_timeout_ms") == "flag agent.ask_timeout_ms");
}

TEST_CASE("config: empty file, null values and dotted top-level keys", "[config]") {
  temp_dir dir;
  SECTION("empty file means defaults") {
    auto cfg = load_yaml(dir, "");
    REQUIRE(cfg);
    CHECK(cfg->get_string("node.name") == "af-node");
  }
  SECTION("a key without a value is empty") {
    auto cfg = load_yaml(dir, "node:\n  listen:\nlog:\n");
    REQUIRE(cfg);
    CHECK(cfg->get_string("node.listen").empty());
    CHECK(cfg->source("node.listen") == af::config_source::file);
  }
  SECTION("a dotted key is the same key") {
    auto cfg = load_yaml(dir, "node.name: dotted\n");
    REQUIRE(cfg);
    CHECK(cfg->get_string("node.name") == "dotted");
  }
  SECTION("a key given twice is an error naming both places") {
    CHECK_THAT(error_of(load_yaml(dir, "node:\n  name: a\n  name: b\n")),
               Contains("node.yaml:3:3: duplicate key 'node.name' (first set at "));
    CHECK_THAT(error_of(load_yaml(dir, "node.name: a\nnode: {name: b}\n")),
               Contains("duplicate key 'node.name'"));
    CHECK_THAT(error_of(load_yaml(dir, "features: {x: 1}\nfeatures: {y: 1}\n")),
               Contains("node.yaml:2:1: duplicate key 'features'"));
  }
  SECTION("the top level must be a map") {
    CHECK_THAT(error_of(load_yaml(dir, "- a\n- b\n")),
               Contains("node.yaml:1:1: expected a map of configuration sections, got a sequence"));
  }
}

TEST_CASE("config: unknown file key names file:line:column and suggests", "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "node:\n  name: n1\n  nmae: n2\n");
  auto r = af::config::load({file, {}, {}});
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  CHECK(r.error().message() == file + ":3:3: unknown key 'node.nmae'; did you mean 'node.name'?");

  SECTION("a misspelt section is suggested too") {
    CHECK(error_of(load_yaml(dir, "nod:\n  name: x\n"))
          == dir.path().string() + "/node.yaml:1:1: unknown key 'nod'; did you mean 'node'?");
  }
  SECTION("no suggestion when nothing is close") {
    auto msg = error_of(load_yaml(dir, "scheduler:\n  completely_different: 1\n"));
    CHECK_THAT(msg, Contains(":2:3: unknown key 'scheduler.completely_different'"));
    CHECK_THAT(msg, !Contains("did you mean"));
  }
  SECTION("a misspelt features section") {
    CHECK_THAT(error_of(load_yaml(dir, "featurs:\n  x: 1\n")),
               Contains("unknown key 'featurs'; did you mean 'features'?"));
  }
}

TEST_CASE("config: wrong types in the file name key, value, expectation and place", "[config]") {
  temp_dir dir;
  SECTION("sequence where an integer belongs") {
    CHECK_THAT(error_of(load_yaml(dir, "scheduler: {threads: [1, 2]}\n")),
               Contains("node.yaml:1:22: scheduler.threads: expected an integer in 1..64, got a "
                        "sequence"));
  }
  SECTION("text where an integer belongs") {
    CHECK_THAT(error_of(load_yaml(dir, "scheduler:\n  threads: many\n")),
               Contains("node.yaml:2:12: scheduler.threads = 'many': expected an integer in "
                        "1..64"));
  }
  SECTION("scalar where a section belongs") {
    CHECK_THAT(error_of(load_yaml(dir, "node: 5\n")),
               Contains("node.yaml:1:7: node: expected a map of its keys, got a scalar"));
  }
  SECTION("map where a string belongs") {
    CHECK_THAT(error_of(load_yaml(dir, "log:\n  file: {path: x}\n")),
               Contains("log.file: expected a string, got a map"));
  }
}

TEST_CASE("config: malloc.arena_max defaults to 0 (glibc's default), settable in 0..1024",
          "[config]") {
  CHECK(af::config::defaults().get_int("malloc.arena_max") == 0);
  auto env = af::config::load({{}, {{"AF_MALLOC_ARENA_MAX", "1"}}, {}});
  REQUIRE(env);
  CHECK(env->get_int("malloc.arena_max") == 1);
  auto flag = load_flag("malloc.arena_max", "8");
  REQUIRE(flag);
  CHECK(flag->get_int("malloc.arena_max") == 8);
  CHECK_THAT(error_of(load_flag("malloc.arena_max", "-1")),
             Contains("malloc.arena_max = '-1': expected an integer in 0..1024"));
  CHECK_THAT(error_of(load_flag("malloc.arena_max", "1025")),
             Contains("expected an integer in 0..1024"));
}

TEST_CASE("config: out-of-range values are rejected from every layer", "[config]") {
  temp_dir dir;
  CHECK_THAT(error_of(load_yaml(dir, "scheduler:\n  threads: 65\n")),
             Contains("node.yaml:2:12: scheduler.threads = '65': expected an integer in 1..64"));
  CHECK(error_of(af::config::load({{}, {{"AF_SCHEDULER_THREADS", "0"}}, {}}))
        == "env AF_SCHEDULER_THREADS: scheduler.threads = '0': expected an integer in 1..64");
  CHECK(error_of(load_flag("envelope.max_payload_bytes", "1073741825"))
        == "flag --envelope.max_payload_bytes: envelope.max_payload_bytes = '1073741825': "
           "expected an integer in 1..1073741824");
  CHECK(load_flag("envelope.max_payload_bytes", "1073741824"));
  CHECK_THAT(error_of(load_flag("agent.ask_timeout_ms", "3600001")),
             Contains("expected an integer in 1..3600000"));
  CHECK_THAT(error_of(load_flag("agent.ask_timeout_ms", "99999999999999999999")),
             Contains("agent.ask_timeout_ms = '99999999999999999999'"));
  CHECK_THAT(error_of(load_flag("scheduler.threads", " 4")), Contains("= ' 4'"));
}

TEST_CASE("config: rng.seed takes the whole uint64 range", "[config]") {
  auto max = load_flag("rng.seed", "18446744073709551615");
  REQUIRE(max);
  CHECK(max->get_uint("rng.seed") == 18446744073709551615ULL);
  CHECK(max->to_json()["rng.seed"]["value"] == 18446744073709551615ULL);
  CHECK_THAT(error_of(load_flag("rng.seed", "-1")),
             Contains("rng.seed = '-1': expected an unsigned 64-bit integer"));
  CHECK_THAT(error_of(load_flag("rng.seed", "18446744073709551616")),
             Contains("expected an unsigned 64-bit integer"));
}

TEST_CASE("config: host:port values", "[config]") {
  for (const char* good :
       {"127.0.0.1:4000", "localhost:0", "node-1.example:65535", "[::1]:80", "0.0.0.0:9090", ""}) {
    INFO(good);
    auto cfg = load_flag("node.listen", good);
    REQUIRE(cfg);
    CHECK(cfg->get_string("node.listen") == good);
  }
  for (const char* bad : {"localhost", ":4000", "host:", "host:65536", "host:-1", "host:port",
                          "::1:80", "[]:80", "ho st:80", "host:80:", "host:+80"}) {
    INFO(bad);
    auto msg = error_of(load_flag("metrics.listen", bad));
    CHECK(msg
          == std::string{"flag --metrics.listen: metrics.listen = '"} + bad
                 + "': expected host:port with a non-empty host and a port in 0..65535, or "
                   "empty");
  }
}

TEST_CASE("config: enumerations and node names", "[config]") {
  CHECK(error_of(load_flag("log.level", "verbose"))
        == "flag --log.level: log.level = 'verbose': expected one of "
           "trace|debug|info|warn|error|off");
  CHECK_THAT(error_of(load_flag("log.format", "JSON")), Contains("expected one of auto|json|text"));
  CHECK_THAT(error_of(load_flag("scheduler.policy", "fifo")),
             Contains("expected one of stealing|sharing"));
  auto sharing = load_flag("scheduler.policy", "sharing");
  REQUIRE(sharing);
  CHECK(sharing->get_string("scheduler.policy") == "sharing");

  for (const std::string& bad :
       {std::string{}, std::string{"bad name"}, std::string(65, 'a'), std::string{"n\xc3\xa9"}}) {
    CHECK_THAT(error_of(load_flag("node.name", bad)),
               Contains("expected 1 to 64 characters from [A-Za-z0-9_.-]"));
  }
  CHECK(load_flag("node.name", std::string(64, 'a')));
  CHECK(load_flag("node.name", "Node_1.eu-west"));
}

TEST_CASE("config: unparseable YAML names file:line:column", "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "node:\n  name: n1\n  listen: [127.0.0.1:4000\n");
  auto r = af::config::load({file, {}, {}});
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  CHECK_THAT(r.error().message(), Contains(file + ":"));
  CHECK_THAT(r.error().message(), Contains("invalid YAML"));
  // file:LINE:COL: the line and column are numbers
  auto rest = r.error().message().substr(file.size() + 1);
  CHECK(std::isdigit(static_cast<unsigned char>(rest[0])) != 0);

  CHECK_THAT(error_of(load_yaml(dir, "node: {name: x\n")), Contains("invalid YAML"));
  CHECK_THAT(error_of(load_yaml(dir, "a: b\n c\n:d\n")), Contains("node.yaml:"));
}

TEST_CASE("config: a missing file is not_found naming the path", "[config]") {
  temp_dir dir;
  auto missing = (dir.path() / "nope.yaml").string();
  auto r = af::config::load({missing, {}, {}});
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::not_found);
  CHECK_THAT(r.error().message(), Contains(missing));

  auto dir_as_file = af::config::load({dir.path().string(), {}, {}});
  REQUIRE_FALSE(dir_as_file);
  CHECK(dir_as_file.error().code() == af::errc::validation);
  CHECK_THAT(dir_as_file.error().message(), Contains("not a regular file"));
}

TEST_CASE("config: environment variables", "[config]") {
  SECTION("every key has its variable") {
    auto cfg = af::config::load({{},
                                 {{"AF_ENVELOPE_MAX_PAYLOAD_BYTES", "1024"},
                                  {"AF_RNG_SEED", "42"},
                                  {"AF_NODE_DATA_DIR", "/var/lib/af"}},
                                 {}});
    REQUIRE(cfg);
    CHECK(cfg->get_int("envelope.max_payload_bytes") == 1024);
    CHECK(cfg->get_uint("rng.seed") == 42);
    CHECK(cfg->get_string("node.data_dir") == "/var/lib/af");
    CHECK(cfg->origin("rng.seed") == "env AF_RNG_SEED");
  }
  SECTION("an unknown AF_ variable is an error with a suggestion") {
    auto r = af::config::load({{}, {{"AF_NODE_NAMEE", "x"}}, {}});
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == af::errc::validation);
    CHECK(r.error().message()
          == "env AF_NODE_NAMEE: unknown configuration variable; did you mean 'AF_NODE_NAME'?");
    CHECK(error_of(af::config::load({{}, {{"AF_WHATEVER_ELSE", "x"}}, {}}))
          == "env AF_WHATEVER_ELSE: unknown configuration variable");
  }
  SECTION("AF_TEST_ variables and non-AF variables are ignored") {
    auto cfg = af::config::load(
        {{},
         {{"AF_TEST_PORT", "oops"}, {"AF_TEST_", ""}, {"NODE_NAME", "x"}, {"af_node_name", "y"}},
         {}});
    REQUIRE(cfg);
    CHECK(cfg->get_string("node.name") == "af-node");
  }
  SECTION("bad env feature name") {
    CHECK_THAT(error_of(af::config::load({{}, {{"AF_FEATURES_", "1"}}, {}})),
               Contains("env AF_FEATURES_: invalid feature flag name ''"));
  }
}

TEST_CASE("config: process_environment reads the real environment", "[config]") {
  auto env = af::config::process_environment();
  if (const char* path = std::getenv("PATH")) CHECK(env.at("PATH") == path);
  for (const auto& [name, value] : env)
    CHECK(name.find('=') == std::string::npos);
}

TEST_CASE("config: unknown flag key names the flag", "[config]") {
  auto r = af::config::load({{}, {}, {{"node.lisen", "x:1", "--lisen"}}});
  REQUIRE_FALSE(r);
  CHECK(r.error().code() == af::errc::validation);
  CHECK(r.error().message()
        == "flag --lisen: unknown configuration key 'node.lisen'; did you mean 'node.listen'?");
  CHECK_THAT(error_of(af::config::load({{}, {}, {{"features.Bad-Name", "1", "--feature"}}})),
             Contains("flag --feature: invalid feature flag name 'Bad-Name'"));
}

TEST_CASE("config: feature flags from every layer, typed by YAML", "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "node:\n"
                                     "  name: n1\n"
                                     "features:\n"
                                     "  fast_path: true\n"
                                     "  batch_size: 64\n"
                                     "  mode: turbo\n"
                                     "  quoted: \"64\"\n"
                                     "  negative: -3\n"
                                     "  overridden: 1\n"
                                     "  pinned: a\n");
  af::config_sources src{file,
                         {{"AF_FEATURES_OVERRIDDEN", "false"}, {"AF_FEATURES_FROM_ENV", "x"}},
                         {{"features.pinned", "7", "--feature pinned=7"}}};
  auto cfg = af::config::load(src);
  REQUIRE(cfg);
  const auto& f = cfg->features();

  CHECK(f.get_bool("fast_path").value());
  CHECK(f.get_int("batch_size").value() == 64);
  CHECK(f.get_string("mode").value() == "turbo");
  CHECK(f.get_string("quoted").value() == "64");
  CHECK(f.get_int("negative").value() == -3);
  CHECK_FALSE(f.get_bool("overridden").value());
  CHECK(f.get_string("from_env").value() == "x");
  CHECK(f.get_int("pinned").value() == 7);

  CHECK(cfg->origin("features.fast_path") == "file " + file + ":4:14");
  CHECK(cfg->origin("features.overridden") == "env AF_FEATURES_OVERRIDDEN");
  CHECK(cfg->source("features.pinned") == af::config_source::flag);
  CHECK(cfg->origin("features.pinned") == "flag --feature pinned=7");

  SECTION("wrong type is a validation error naming flag and actual type") {
    auto r = f.get_int("fast_path");
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == af::errc::validation);
    CHECK_THAT(r.error().message(), Contains("feature flag 'fast_path' is bool"));
    CHECK_THAT(r.error().message(), Contains("not int"));
    CHECK_THAT(f.get_bool("mode").error().message(), Contains("'mode' is string"));
    CHECK_THAT(f.get_string("batch_size").error().message(), Contains("'batch_size' is int"));
  }
  SECTION("unknown flag is not_found") {
    auto r = f.get_bool("missing");
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == af::errc::not_found);
    CHECK_THAT(r.error().message(), Contains("'missing'"));
    CHECK_FALSE(f.contains("missing"));
    CHECK(f.contains("mode"));
  }
  SECTION("fallbacks") {
    CHECK(f.get_bool("missing", true));
    CHECK(f.get_bool("mode", true));
    CHECK(f.get_int("missing", 9) == 9);
    CHECK(f.get_int("batch_size", 9) == 64);
    CHECK(f.get_string("missing", "dflt") == "dflt");
    CHECK(f.get_string("mode", "dflt") == "turbo");
  }
  SECTION("snapshot strings and json") {
    auto s = f.snapshot_strings();
    CHECK(s.at("fast_path") == "true");
    CHECK(s.at("batch_size") == "64");
    CHECK(s.at("mode") == "turbo");
    auto j = cfg->to_json();
    CHECK(j["features"]["fast_path"]["value"] == true);
    CHECK(j["features"]["batch_size"]["value"] == 64);
    CHECK(j["features"]["from_env"]["source"] == "env");
  }
  SECTION("copies of a config share the flags") {
    af::config copy = *cfg;
    CHECK(copy.features_ptr() == cfg->features_ptr());
  }
}

TEST_CASE("config: feature values are typed like YAML plain scalars", "[config]") {
  using af::feature_value;
  CHECK(af::parse_feature_value("true") == feature_value{true});
  CHECK(af::parse_feature_value("FALSE") == feature_value{false});
  CHECK(af::parse_feature_value("42") == feature_value{std::int64_t{42}});
  CHECK(af::parse_feature_value("+5") == feature_value{std::int64_t{5}});
  CHECK(af::parse_feature_value("-7") == feature_value{std::int64_t{-7}});
  CHECK(af::parse_feature_value("+-7") == feature_value{std::string{"+-7"}});
  CHECK(af::parse_feature_value("yes") == feature_value{std::string{"yes"}});
  CHECK(af::parse_feature_value("1.5") == feature_value{std::string{"1.5"}});
  CHECK(af::parse_feature_value("") == feature_value{std::string{}});
  CHECK(af::parse_feature_value("99999999999999999999")
        == feature_value{std::string{"99999999999999999999"}});
  CHECK(af::type_name(af::parse_feature_value("1")) == "int");
  CHECK(af::valid_feature_name("fast_path_2"));
  CHECK_FALSE(af::valid_feature_name("Fast"));
  CHECK_FALSE(af::valid_feature_name("a-b"));
  CHECK_FALSE(af::valid_feature_name(std::string(65, 'a')));
}

TEST_CASE("config: bad features sections", "[config]") {
  temp_dir dir;
  CHECK_THAT(error_of(load_yaml(dir, "features: [a, b]\n")),
             Contains("node.yaml:1:11: features: expected a map of flag names to values, got a "
                      "sequence"));
  CHECK_THAT(
      error_of(load_yaml(dir, "features:\n  nested: {a: 1}\n")),
      Contains("node.yaml:2:11: features.nested: expected a bool, int or string, got a map"));
  CHECK_THAT(error_of(load_yaml(dir, "features:\n  BadName: 1\n")),
             Contains("node.yaml:2:3: invalid feature flag name 'BadName'"));
  CHECK_THAT(error_of(load_yaml(dir, "features:\n  empty:\n")),
             Contains("features.empty: expected a bool, int or string, got a null"));
  auto none = load_yaml(dir, "features:\n");
  REQUIRE(none);
  CHECK(none->features().entries()->empty());
}

TEST_CASE("feature_flags: reload swaps in the new features section", "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "node: {name: n1}\n"
                                     "features:\n"
                                     "  fast_path: true\n"
                                     "  batch_size: 64\n"
                                     "  pinned: 1\n");
  auto cfg = af::config::load({file, {}, {{"features.pinned", "99", "--feature"}}});
  REQUIRE(cfg);
  auto flags = cfg->features_ptr();
  CHECK(flags->version() == 0);

  // Only `features` is re-read: the rest of the file may even be invalid now.
  dir.write("node.yaml", "node: {name: 'not a valid name', bogus: 1}\n"
                         "features:\n"
                         "  fast_path: false\n"
                         "  new_flag: hello\n"
                         "  pinned: 2\n");
  auto st = flags->reload_from_file(file, {{"AF_FEATURES_BATCH_SIZE", "128"}, {"AF_BOGUS", "x"}});
  REQUIRE(st);
  CHECK(flags->version() == 1);
  CHECK_FALSE(flags->get_bool("fast_path").value());
  CHECK(flags->get_string("new_flag").value() == "hello");
  CHECK(flags->get_int("batch_size").value() == 128);
  CHECK(flags->get_int("pinned").value() == 99); // the command line still wins
  CHECK(cfg->source("features.fast_path") == af::config_source::reload);
  CHECK(cfg->origin("features.fast_path") == "reload file " + file + ":3:14");
  CHECK(cfg->origin("features.batch_size") == "reload env AF_FEATURES_BATCH_SIZE");
  CHECK(cfg->source("features.pinned") == af::config_source::flag);

  dir.write("node.yaml", "node: {name: n1}\n");
  REQUIRE(flags->reload_from_file(file, {}));
  CHECK(flags->version() == 2);
  CHECK_FALSE(flags->contains("fast_path"));
  CHECK(flags->snapshot_strings() == std::map<std::string, std::string>{{"pinned", "99"}});
}

TEST_CASE("feature_flags: a failed reload keeps the old flags", "[config]") {
  temp_dir dir;
  auto file = dir.write("node.yaml", "features:\n  fast_path: true\n  batch_size: 64\n");
  auto cfg = af::config::load({file, {}, {}});
  REQUIRE(cfg);
  auto& flags = *cfg->features_ptr();
  auto before = flags.snapshot_strings();

  SECTION("unparseable YAML") {
    dir.write("node.yaml", "features:\n  fast_path: [true\n");
    auto st = flags.reload_from_file(file, {});
    REQUIRE_FALSE(st);
    CHECK_THAT(st.error().message(), Contains(file + ":"));
  }
  SECTION("missing file") {
    auto st = flags.reload_from_file(dir.path() / "gone.yaml", {});
    REQUIRE_FALSE(st);
    CHECK(st.error().code() == af::errc::not_found);
  }
  SECTION("invalid flag") {
    dir.write("node.yaml", "features:\n  fast_path: false\n  Bad: 1\n");
    auto st = flags.reload_from_file(file, {});
    REQUIRE_FALSE(st);
    CHECK_THAT(st.error().message(), Contains(file + ":3:3: invalid feature flag name 'Bad'"));
  }
  SECTION("invalid env override") {
    dir.write("node.yaml", "features:\n  fast_path: false\n");
    auto st = flags.reload_from_file(file, {{"AF_FEATURES_B-AD", "1"}});
    REQUIRE_FALSE(st);
    CHECK_THAT(st.error().message(), Contains("env AF_FEATURES_B-AD"));
  }
  CHECK(flags.version() == 0);
  CHECK(flags.snapshot_strings() == before);
  CHECK(flags.get_bool("fast_path").value());
}

TEST_CASE("feature_flags: readers see whole snapshots while reloads happen", "[config]") {
  temp_dir dir;
  // Two files whose flags agree with each other: a reader must never see a mix.
  auto a = dir.write("a.yaml", "features: {gen: 1, twin: 1, on: true}\n");
  auto b = dir.write("b.yaml", "features: {gen: 2, twin: 2, on: false, extra: x}\n");
  auto cfg = af::config::load({a, {}, {}});
  REQUIRE(cfg);
  auto flags = cfg->features_ptr();

  constexpr int k_reloads = 200;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<long> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      std::uint64_t last_version = 0;
      while (!done.load()) {
        auto snap = flags->entries();
        auto gen = std::get<std::int64_t>(snap->at("gen").value);
        auto twin = std::get<std::int64_t>(snap->at("twin").value);
        bool on = std::get<bool>(snap->at("on").value);
        if (gen != twin || on != (gen == 1) || snap->contains("extra") != (gen == 2)) ++torn;
        auto v = flags->version();
        if (v < last_version) ++torn;
        last_version = v;
        (void)flags->get_int("gen", 0);
        (void)flags->get_bool("on", false);
        ++reads;
      }
    });

  int failures = 0;
  for (int i = 0; i < k_reloads; ++i)
    if (!flags->reload_from_file(i % 2 == 0 ? b : a, {})) ++failures;
  done = true;
  for (auto& r : readers)
    r.join();

  CHECK(failures == 0);
  CHECK(torn == 0);
  CHECK(reads > 0);
  CHECK(flags->version() == k_reloads);
  CHECK(flags->get_int("gen").value() == 1);
}
