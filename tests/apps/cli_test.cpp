// Tests the `af` command in-process through af::cli::run: exit codes, error messages that name
// the flag, key, file or variable at fault, --help examples, the configuration precedence shown by
// `af config show --json`, a small `af demo` run and `af node status` against a closed port.
// `af node start` blocks on signals and is covered by tests/apps/node_e2e.sh instead.
#include "af/cli.hpp"

#include "support/temp_dir.hpp"
#include <atomic>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

struct af_result {
  int code = -1;
  std::string out;
  std::string err;
};

/// Runs `af args...` in this process.
af_result run_af(std::vector<std::string> args) {
  std::vector<const char*> argv{"af"};
  for (const auto& a : args)
    argv.push_back(a.c_str());
  argv.push_back(nullptr);
  std::ostringstream out, err;
  af_result r;
  r.code = af::cli::run(static_cast<int>(argv.size() - 1), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

/// Sets and unsets environment variables, restoring every one it touched on destruction. On
/// construction it removes every AF_* variable the test process inherited, so the tests see
/// only the layers they set up themselves.
class scoped_env {
public:
  scoped_env() {
    std::vector<std::string> inherited;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string_view s{*e};
      if (s.starts_with("AF_") && s.find('=') != std::string_view::npos)
        inherited.emplace_back(s.substr(0, s.find('=')));
    }
    for (const auto& name : inherited)
      unset(name);
  }
  ~scoped_env() {
    for (const auto& [name, old] : saved_) {
      if (old)
        ::setenv(name.c_str(), old->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

  void set(const std::string& name, const std::string& value) {
    remember(name);
    REQUIRE(::setenv(name.c_str(), value.c_str(), 1) == 0);
  }
  void unset(const std::string& name) {
    remember(name);
    REQUIRE(::unsetenv(name.c_str()) == 0);
  }

private:
  void remember(const std::string& name) {
    if (saved_.contains(name)) return;
    const char* old = std::getenv(name.c_str());
    saved_.emplace(name, old ? std::optional<std::string>{old} : std::nullopt);
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

/// Temp dirs of this file are named "af-cli-test-<pid>-<n>".
struct temp_dir : af::test::temp_dir {
  temp_dir() : af::test::temp_dir("af-cli-test") {}
};

nlohmann::json parse_json(const std::string& text) {
  INFO("output: " << text);
  REQUIRE(nlohmann::json::accept(text));
  return nlohmann::json::parse(text);
}

} // namespace

// ---- parsing errors -------------------------------------------------------------------------

TEST_CASE("af: an unknown flag is a usage error that names the flag", "[cli]") {
  scoped_env env;
  SECTION("top level") {
    auto r = run_af({"--bogus-flag"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--bogus-flag"));
    CHECK(r.out.empty());
  }
  SECTION("after a subcommand") {
    auto r = run_af({"version", "--frobnicate"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--frobnicate"));
  }
  SECTION("after a nested subcommand") {
    auto r = run_af({"config", "show", "--no-such-option", "1"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--no-such-option"));
  }
  SECTION("beside a missing required option") {
    auto r = run_af({"node", "status", "--bogus"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--bogus"));
    CHECK_THAT(r.err, Contains("--connect is required"));
  }
  SECTION("the error points at --help") {
    auto r = run_af({"demo", "--wrokers", "5"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--wrokers"));
    CHECK_THAT(r.err, Contains("--help"));
  }
}

TEST_CASE("af: an unknown or missing subcommand is a usage error", "[cli]") {
  scoped_env env;
  SECTION("unknown top-level subcommand") {
    auto r = run_af({"frobnicate"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("frobnicate"));
  }
  SECTION("unknown nested subcommand") {
    auto r = run_af({"node", "explode"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("explode"));
  }
  SECTION("no subcommand at all") {
    auto r = run_af({});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_FALSE(r.err.empty());
  }
  SECTION("a group without its subcommand") {
    CHECK(run_af({"node"}).code == af::cli::k_exit_usage);
    CHECK(run_af({"config"}).code == af::cli::k_exit_usage);
  }
}

TEST_CASE("af: out-of-range and missing option values are usage errors", "[cli]") {
  scoped_env env;
  auto r = run_af({"demo", "--workers", "2"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--workers"));

  r = run_af({"node", "status"}); // --connect is required
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--connect"));

  r = run_af({"node", "status", "--connect", "127.0.0.1:1", "--timeout-ms", "0"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--timeout-ms"));
}

// ---- version and help -----------------------------------------------------------------------

TEST_CASE("af version prints the version, as text or JSON", "[cli]") {
  scoped_env env;
  SECTION("text") {
    auto r = run_af({"version"});
    CHECK(r.code == af::cli::k_exit_ok);
    CHECK_THAT(r.out, StartsWith("af (agentflow) "));
    CHECK(r.out.back() == '\n');
    CHECK(r.err.empty());
  }
  SECTION("JSON") {
    auto r = run_af({"version", "--json"});
    REQUIRE(r.code == af::cli::k_exit_ok);
    auto j = parse_json(r.out);
    CHECK(j.at("name") == "agentflow");
    auto v = j.at("version").get<std::string>();
    CHECK_FALSE(v.empty());
    CHECK(std::count(v.begin(), v.end(), '.') == 2);
    // The text form carries the same version.
    CHECK(run_af({"version"}).out == "af (agentflow) " + v + "\n");
  }
}

TEST_CASE("af --help and every subcommand's --help exit 0 and show an example", "[cli]") {
  scoped_env env;
  struct help_case {
    std::vector<std::string> args;
    std::string example; // a line of the example
  };
  const std::vector<help_case> cases{
      {{"--help"}, "af demo"},
      {{"-h"}, "af node start --listen"},
      {{"version", "--help"}, "af version --json"},
      {{"node", "start", "--help"}, "af node start --data-dir"},
      {{"node", "status", "--help"}, "af node status --connect 127.0.0.1:7400"},
      {{"demo", "--help"}, "af demo --workers 200 --json"},
      {{"config", "show", "--help"}, "af config show --config node.yaml --json"},
      {{"config", "keys", "--help"}, "af config keys"},
      {{"sim", "run", "--help"}, "af sim run examples/sim/work-exchange.yaml --seed 7"},
      {{"sim", "fuzz", "--help"}, "af sim fuzz examples/sim/planted-bug.yaml --seeds 1..1000"},
  };
  for (const auto& c : cases) {
    std::string cmd;
    for (const auto& a : c.args)
      cmd += " " + a;
    INFO("af" << cmd);
    auto r = run_af(c.args);
    CHECK(r.code == af::cli::k_exit_ok);
    CHECK(r.err.empty());
    CHECK_THAT(r.out, Contains("Example:"));
    CHECK_THAT(r.out, Contains(c.example));
  }
}

TEST_CASE("af SUBCOMMAND --help describes that subcommand's own options", "[cli]") {
  scoped_env env;
  auto r = run_af({"node", "start", "--help"});
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("--port-file"));
  CHECK_THAT(r.out, Contains("--listen"));

  r = run_af({"node", "status", "--help"});
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("--connect"));
  CHECK_THAT(r.out, Contains("--timeout-ms"));

  r = run_af({"demo", "--help"});
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("--workers"));
  CHECK_THAT(r.out, Contains("--limit"));

  r = run_af({"config", "show", "--help"});
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("--set"));
}

// ---- configuration errors -------------------------------------------------------------------

TEST_CASE("af: a malformed config file is a usage error naming the file and the key", "[cli]") {
  scoped_env env;
  temp_dir dir;

  SECTION("invalid YAML") {
    auto file = dir.write("bad.yaml", "node:\n  name: [unclosed\n");
    auto r = run_af({"config", "show", "--config", file});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(file + ":"));
    CHECK_THAT(r.err, Contains("invalid YAML"));
    CHECK(r.out.empty());
  }
  SECTION("unknown key, with file:line and a suggestion") {
    auto file = dir.write("typo.yaml", "node:\n  name: n1\n  nmae: n2\n");
    auto r = run_af({"config", "show", "--config", file});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(file + ":3:"));
    CHECK_THAT(r.err, Contains("unknown key 'node.nmae'"));
    CHECK_THAT(r.err, Contains("did you mean 'node.name'"));
  }
  SECTION("unknown top-level section") {
    auto file = dir.write("section.yaml", "# comment\nnetwork:\n  port: 1\n");
    auto r = run_af({"config", "show", "--config", file});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(file + ":2:"));
    CHECK_THAT(r.err, Contains("'network'"));
  }
  SECTION("wrong type") {
    auto file = dir.write("type.yaml", "scheduler:\n  threads: many\n");
    auto r = run_af({"config", "show", "--config", file});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(file + ":2:"));
    CHECK_THAT(r.err, Contains("scheduler.threads"));
    CHECK_THAT(r.err, Contains("many"));
  }
  SECTION("a map where a value belongs") {
    auto file = dir.write("map.yaml", "log:\n  level:\n    deep: true\n");
    auto r = run_af({"config", "show", "--config", file});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(file));
    CHECK_THAT(r.err, Contains("log.level"));
  }
  SECTION("the same errors stop af node start before it starts anything") {
    auto file = dir.write("type.yaml", "scheduler:\n  threads: 0\n");
    auto r = run_af({"node", "start", "--config", file});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("scheduler.threads"));
    CHECK_THAT(r.err, Contains(file));
    CHECK(r.out.empty());
  }
  SECTION("and af demo") {
    auto file = dir.write("enum.yaml", "log:\n  level: loud\n");
    auto r = run_af({"demo", "--config", file, "--workers", "3", "--tasks", "1"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("log.level"));
    CHECK_THAT(r.err, Contains(file));
  }
  SECTION("a missing file") {
    auto missing = (fs::temp_directory_path() / "af-cli-test-no-such-file.yaml").string();
    auto r = run_af({"config", "show", "--config", missing});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(missing));
    CHECK_THAT(r.err, Contains("not found"));
  }
}

TEST_CASE("af: a bad --set is a usage error naming it", "[cli]") {
  scoped_env env;
  SECTION("no '='") {
    auto r = run_af({"config", "show", "--set", "scheduler.threads"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--set 'scheduler.threads'"));
    CHECK_THAT(r.err, Contains("KEY=VALUE"));
  }
  SECTION("empty key") {
    auto r = run_af({"config", "show", "--set", "=3"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("'=3'"));
  }
  SECTION("unknown key") {
    auto r = run_af({"config", "show", "--set", "scheduler.thread=3"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--set scheduler.thread"));
    CHECK_THAT(r.err, Contains("unknown configuration key 'scheduler.thread'"));
    CHECK_THAT(r.err, Contains("did you mean 'scheduler.threads'"));
  }
  SECTION("bad value") {
    auto r = run_af({"config", "show", "--set", "scheduler.threads=65"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--set scheduler.threads"));
    CHECK_THAT(r.err, Contains("1..64"));
  }
  SECTION("bad value of a dedicated flag") {
    auto r = run_af({"config", "show", "--listen", "nohost"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--listen"));
    CHECK_THAT(r.err, Contains("node.listen"));
  }
}

TEST_CASE("af: a bad AF_* environment variable is a usage error naming it", "[cli]") {
  scoped_env env;
  SECTION("bad value") {
    env.set("AF_SCHEDULER_THREADS", "zero");
    auto r = run_af({"config", "show"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("AF_SCHEDULER_THREADS"));
    CHECK_THAT(r.err, Contains("zero"));
  }
  SECTION("unknown variable") {
    env.set("AF_NODE_NMAE", "n1");
    auto r = run_af({"config", "show"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("AF_NODE_NMAE"));
    CHECK_THAT(r.err, Contains("did you mean 'AF_NODE_NAME'"));
  }
  SECTION("bad feature variable") {
    env.set("AF_FEATURES_", "1");
    auto r = run_af({"config", "show"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("AF_FEATURES_"));
  }
  SECTION("it also stops af demo") {
    env.set("AF_LOG_LEVEL", "chatty");
    auto r = run_af({"demo", "--workers", "3", "--tasks", "1", "--json"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("AF_LOG_LEVEL"));
    CHECK(r.out.empty());
  }
}

TEST_CASE("scoped_env restores the environment it changed", "[cli]") {
  ::unsetenv("AF_TEST_CLI_PROBE");
  {
    scoped_env env;
    env.set("AF_TEST_CLI_PROBE", "x");
    CHECK(std::getenv("AF_TEST_CLI_PROBE") != nullptr);
  }
  CHECK(std::getenv("AF_TEST_CLI_PROBE") == nullptr);
  CHECK(run_af({"config", "show"}).code == af::cli::k_exit_ok);
}

// ---- af config show -------------------------------------------------------------------------

TEST_CASE("af config show --json: defaults < file < env < flag, with origins", "[cli]") {
  scoped_env env;
  temp_dir dir;
  const auto file = dir.write("node.yaml", "node:\n"
                                           "  name: from-file\n" // line 2: file wins
                                           "scheduler:\n"
                                           "  threads: 3\n" // line 4: env wins
                                           "log:\n"
                                           "  level: debug\n" // line 6: flag wins
                                           "  format: text\n" // line 7: env, flag win
                                           "features:\n"
                                           "  fast_path: true\n" // line 9: file wins
                                           "  batch: 8\n");      // line 10: env wins
  env.set("AF_SCHEDULER_THREADS", "4");
  env.set("AF_LOG_LEVEL", "warn");
  env.set("AF_LOG_FORMAT", "json");
  env.set("AF_FEATURES_BATCH", "16");
  env.set("AF_FEATURES_MODE", "env");
  auto r = run_af({"config", "show", "--json", "--config", file, "--log-level", "error", "--set",
                   "log.format=auto", "--set", "features.mode=flag", "--set", "rng.seed=42"});
  INFO(r.err);
  REQUIRE(r.code == af::cli::k_exit_ok);
  auto j = parse_json(r.out);

  auto check = [&](const std::string& key, const nlohmann::json& value, const std::string& source,
                   const std::string& origin) {
    INFO(key << ": " << j.at(key).dump());
    CHECK(j.at(key).at("value") == value);
    CHECK(j.at(key).at("source") == source);
    CHECK(j.at(key).at("origin") == origin);
  };
  check("node.data_dir", "data", "defaults", "default");
  check("agent.ask_timeout_ms", 5000, "defaults", "default");
  check("node.name", "from-file", "file", "file " + file + ":2:9");
  check("scheduler.threads", 4, "env", "env AF_SCHEDULER_THREADS");
  check("log.level", "error", "flag", "flag --log-level");
  check("log.format", "auto", "flag", "flag --set log.format");
  check("rng.seed", 42, "flag", "flag --set rng.seed");

  const auto& f = j.at("features");
  CHECK(f.at("fast_path").at("value") == true);
  CHECK(f.at("fast_path").at("source") == "file");
  CHECK_THAT(f.at("fast_path").at("origin").get<std::string>(), StartsWith("file " + file + ":9:"));
  CHECK(f.at("batch").at("value") == 16);
  CHECK(f.at("batch").at("origin") == "env AF_FEATURES_BATCH");
  CHECK(f.at("mode").at("value") == "flag");
  CHECK(f.at("mode").at("source") == "flag");
  CHECK(f.at("mode").at("origin") == "flag --set features.mode");

  SECTION("the text form shows the same values and origins") {
    auto t = run_af({"config", "show", "--config", file, "--log-level", "error"});
    REQUIRE(t.code == af::cli::k_exit_ok);
    CHECK_THAT(t.out, Contains("from-file"));
    CHECK_THAT(t.out, Contains("(file " + file + ":2:9)"));
    CHECK_THAT(t.out, Contains("(env AF_SCHEDULER_THREADS)"));
    CHECK_THAT(t.out, Contains("(flag --log-level)"));
    CHECK_THAT(t.out, Contains("features.batch"));
  }
}

TEST_CASE("af config show with no file, env or flags shows the defaults", "[cli]") {
  scoped_env env;
  auto r = run_af({"config", "show", "--json"});
  REQUIRE(r.code == af::cli::k_exit_ok);
  auto j = parse_json(r.out);
  for (const auto& [key, v] : j.items()) {
    if (key == "features") {
      CHECK(v.empty());
      continue;
    }
    INFO(key);
    CHECK(v.at("source") == "defaults");
  }
  CHECK(j.at("node.name").at("value") == "af-node");
}

TEST_CASE("af config keys lists every key with its environment variable", "[cli]") {
  scoped_env env;
  auto r = run_af({"config", "keys"});
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("scheduler.threads"));
  CHECK_THAT(r.out, Contains("AF_SCHEDULER_THREADS"));
  CHECK_THAT(r.out, Contains("metrics.listen"));
  // Every key `config show --json` knows is documented.
  auto j = parse_json(run_af({"config", "show", "--json"}).out);
  for (const auto& [key, v] : j.items())
    if (key != "features") {
      INFO(key);
      CHECK_THAT(r.out, Contains(key + "  ("));
    }
}

// ---- af demo and af node status -------------------------------------------------------------

TEST_CASE("af demo --json runs in-process and counts the primes correctly", "[cli][demo]") {
  scoped_env env;
  auto r = run_af({"demo", "--workers", "20", "--tasks", "50", "--limit", "20000", "--json"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == af::cli::k_exit_ok);
  // Only the JSON result on stdout: no banner, no progress lines.
  REQUIRE(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  auto j = parse_json(r.out);
  CHECK(j.at("ok") == true);
  CHECK(j.at("primes") == 2262);
  CHECK(j.at("expected") == 2262);
  CHECK(j.at("workers") == 20);
  CHECK(j.at("tasks") == 50);
  CHECK(j.at("limit") == 20000);
  CHECK(j.at("asks") == 150); // each task: one ask to a worker, which asks two peers
  CHECK(j.at("seconds").get<double>() > 0);
  CHECK(j.at("task_rtt_us").at("p50").get<double>() > 0);
  CHECK(j.at("task_rtt_us").at("p99").get<double>() >= j.at("task_rtt_us").at("p50").get<double>());
  CHECK(j.at("peer_rtt_us").at("p99").get<double>() >= j.at("peer_rtt_us").at("p50").get<double>());
}

TEST_CASE("af demo text output reports the checked result", "[cli][demo]") {
  scoped_env env;
  auto r = run_af({"demo", "--workers", "5", "--tasks", "10", "--limit", "1000"});
  INFO("stderr: " << r.err);
  REQUIRE(r.code == af::cli::k_exit_ok);
  CHECK_THAT(r.out, Contains("5 worker agents, 10 tasks"));
  CHECK_THAT(r.out, Contains("result: 168 primes below 1000 (independent sieve: 168, match)"));
}

TEST_CASE("af demo logs at warn by default, unless a layer sets log.level", "[cli][demo]") {
  scoped_env env;
  temp_dir dir;
  const auto log_file = dir.write("demo.log", "");
  auto demo = [](std::vector<std::string> extra) {
    std::vector<std::string> args{"demo", "--workers", "3",   "--tasks",
                                  "2",    "--limit",   "100", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_af(args);
    INFO("stderr: " << r.err);
    CHECK(r.code == af::cli::k_exit_ok);
  };
  auto log_text = [&] {
    std::ifstream in{log_file};
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  };
  SECTION("the demo default: no info lines") {
    demo({"--set", "log.file=" + log_file});
    CHECK_THAT(log_text(), !Contains("node_started"));
  }
  SECTION("the file's log.level wins over the demo default") {
    auto cfg = dir.write("demo.yaml", "log:\n  level: info\n  file: " + log_file + "\n");
    demo({"--config", cfg});
    CHECK_THAT(log_text(), Contains("node_started"));
  }
  SECTION("the environment's log.level wins over the demo default") {
    env.set("AF_LOG_LEVEL", "info");
    env.set("AF_LOG_FILE", log_file);
    demo({});
    CHECK_THAT(log_text(), Contains("node_started"));
  }
  SECTION("a flag wins over the demo default") {
    demo({"--log-level", "info", "--set", "log.file=" + log_file});
    CHECK_THAT(log_text(), Contains("node_started"));
  }
}

TEST_CASE("af node status against a closed port fails fast with a clear message", "[cli]") {
  scoped_env env;
  const auto start = std::chrono::steady_clock::now();
  auto r = run_af({"node", "status", "--connect", "127.0.0.1:1", "--json"});
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(r.code != af::cli::k_exit_ok);
  CHECK(r.code == af::cli::k_exit_failure);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, StartsWith("af: "));
  CHECK_THAT(r.err, Contains("127.0.0.1:1"));
  CHECK_THAT(r.err, Contains("cannot connect"));
  CHECK(took < std::chrono::seconds(10));
}

TEST_CASE("af demo --connect to a closed port fails fast", "[cli][demo]") {
  scoped_env env;
  auto r = run_af({"demo", "--connect", "127.0.0.1:1", "--json"});
  CHECK(r.code == af::cli::k_exit_failure);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Contains("127.0.0.1:1"));
}

TEST_CASE("af node status --connect with a malformed address is a usage error", "[cli]") {
  scoped_env env;
  for (const char* bad : {"localhost", "127.0.0.1:99999", ":7400"}) {
    INFO(bad);
    auto r = run_af({"node", "status", "--connect", bad});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("--connect"));
    CHECK_THAT(r.err, Contains(bad));
  }
}

// ---- af sim: usage errors (runs and fuzzing need the engine: tests/apps/sim_e2e.sh) ----------

namespace {

const std::string k_sim_scenario = "apiVersion: agentflow/v1\nkind: Scenario\nmetadata: {name: t}\n"
                                   "spec:\n  nodes: 2\n  populations: [{type: sim.worker}]\n";

} // namespace

TEST_CASE("af sim: a missing or invalid scenario is a usage error naming file:line:col",
          "[cli][sim]") {
  scoped_env env;
  af::test::temp_dir dir{"af-cli-sim"};
  for (const char* cmd : {"run", "fuzz"}) {
    INFO(cmd);
    std::vector<std::string> extra;
    if (std::string_view{cmd} == "fuzz") extra = {"--seeds", "1..3"};
    auto with = [&](std::vector<std::string> args) {
      args.insert(args.end(), extra.begin(), extra.end());
      return run_af(std::move(args));
    };
    const auto missing = (dir.path() / "nope.yaml").string();
    auto r = with({"sim", cmd, missing});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK(r.err == "af: not_found: scenario file '" + missing + "' not found\n");
    CHECK(r.out.empty());

    const auto bad =
        dir.write("bad.yaml", k_sim_scenario + "  faults: {schedule: [{at: 1s, crash: n7}]}\n");
    r = with({"sim", cmd, bad});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK(r.err
          == "af: validation: " + bad
                 + ":7:39: spec.faults.schedule[0].crash: unknown node 'n7' (nodes: n1, n2)\n");
    CHECK(r.out.empty());
  }
}

TEST_CASE("af sim fuzz: a bad --seeds or --jobs is a usage error", "[cli][sim]") {
  scoped_env env;
  af::test::temp_dir dir{"af-cli-sim"};
  const auto file = dir.write("ok.yaml", k_sim_scenario);
  for (const char* seeds : {"5..2", "1-10", "..4", "3..", "a..b", "1..2..3", "-1..4"}) {
    INFO(seeds);
    auto r = run_af({"sim", "fuzz", file, "--seeds", seeds});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK(r.err
          == std::string{"af: validation: --seeds '"} + seeds
                 + "': expected A..B, two seeds with A <= B (for example 1..1000)\n");
    CHECK(r.out.empty());
  }
  auto r = run_af({"sim", "fuzz", file});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--seeds is required"));
  r = run_af({"sim", "fuzz", file, "--seeds", "1..2", "--jobs", "0"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--jobs"));
  r = run_af({"sim", "fuzz", file, "--seeds", "1..2", "--stop-after", "0"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--stop-after"));
}

TEST_CASE("af sim run: a bad --until, --seed or --plugin is a usage error naming it",
          "[cli][sim]") {
  scoped_env env;
  af::test::temp_dir dir{"af-cli-sim"};
  const auto file = dir.write("ok.yaml", k_sim_scenario);
  auto r = run_af({"sim", "run", file, "--until", "soon"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK(r.err
        == "af: validation: --until 'soon': expected a duration: a number and a unit ns, "
           "us, ms, s, m or h (250ms, 1.5s, 2m)\n");
  r = run_af({"sim", "run", file, "--until", "-5s"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK(r.err == "af: validation: --until '-5s': expected a duration > 0\n");
  r = run_af({"sim", "run", file, "--seed", "x"});
  CHECK(r.code == af::cli::k_exit_usage);
  CHECK_THAT(r.err, Contains("--seed"));
  const auto plugin = (dir.path() / "libnope.so").string();
  for (const char* cmd : {"run", "fuzz"}) {
    INFO(cmd);
    std::vector<std::string> args{"sim", cmd, file, "--plugin", plugin};
    if (std::string_view{cmd} == "fuzz") {
      args.emplace_back("--seeds");
      args.emplace_back("1..2");
    }
    r = run_af(args);
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains(plugin));
    CHECK(r.out.empty());
  }
  r = run_af({"sim"});
  CHECK(r.code == af::cli::k_exit_usage);
}

TEST_CASE("af node start: a bad Raft or takeover setting is a usage error naming it, before "
          "anything starts",
          "[cli]") {
  scoped_env env;
  af::test::temp_dir dir{"af-cli-raft"};
  const auto data = (dir.path() / "data").string();
  const std::vector<std::string> base{"node",       "start",   "--data-dir", data,
                                      "--name",     "n3",      "--no-demo-service"};
  auto with = [&](std::vector<std::string> extra) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return run_af(args);
  };
  SECTION("Raft members without a cluster transport") {
    auto r = with({"--raft-members", "n1,n2,n3"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("cluster.raft.members (flag --raft-members) needs cluster.listen"));
    CHECK(r.out.empty());
  }
  SECTION("Raft members that do not name this node") {
    auto r = with({"--cluster-listen", "127.0.0.1:0", "--raft-members", "n1, n2"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("does not name this node ('n3', node.name)"));
    CHECK(r.out.empty());
  }
  SECTION("a member that is not a node name") {
    auto r = with({"--cluster-listen", "127.0.0.1:0", "--raft-members", "n3,bad name"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("'bad name' is not a node name"));
  }
  SECTION("Raft timing the Raft agent refuses") {
    auto r = with({"--cluster-listen", "127.0.0.1:0", "--raft-members", "n3", "--set",
                   "cluster.raft.heartbeat_ms=900", "--set", "cluster.raft.election_timeout_ms=500"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("cluster.raft (flag --raft-members)"));
  }
  SECTION("lease timing that leaves no room for two renewals, with a shared store") {
    // Ownership is on only with Raft and a PostgreSQL store; the URL is never dialled because
    // the settings are refused first.
    auto r = with({"--cluster-listen", "127.0.0.1:0", "--raft-members", "n3", "--set",
                   "store.url=postgres://nobody@127.0.0.1:1/none", "--set",
                   "cluster.exec.lease_ttl_ms=3000", "--set", "cluster.exec.renew_ms=2000"});
    CHECK(r.code == af::cli::k_exit_usage);
    CHECK_THAT(r.err, Contains("cluster.exec"));
    CHECK_THAT(r.err, Contains("renew_every must be at most half of lease_ttl - margin"));
  }
  SECTION("--raft-members is the key cluster.raft.members") {
    auto r = run_af({"config", "show", "--json", "--raft-members", "n1,n2,n3"});
    REQUIRE(r.code == af::cli::k_exit_ok);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["cluster.raft.members"]["value"] == "n1,n2,n3");
    CHECK(j["cluster.raft.members"]["origin"] == "flag --raft-members");
  }
}
