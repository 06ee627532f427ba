// `af sim run` and `af sim fuzz`: one deterministic simulation in this process, or many seeds in
// worker processes (this same binary, `sim run --json`), docs/simulation.md and docs/cli.md.
#include "af/duration_text.hpp"
#include "af/sim/scenario.hpp"
#include "af/sim/simulation.hpp"
#include "commands.hpp"
#include "demo_plan.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace af::cli::detail {

namespace {

using wall_clock = std::chrono::steady_clock; // the CLI's own pacing, never simulated time

struct sim_state {
  std::string file, until, trace_file, log_file, history_file, seeds;
  std::uint64_t seed = 1;
  std::vector<std::string> plugins;
  bool json = false;
  unsigned jobs = 2;
  unsigned stop_after = 0;
};

int usage(std::ostream& err, const error& e) {
  err << "af: " << e.to_string() << "\n";
  return k_exit_usage;
}

/// Errors in what the user gave (a scenario, a plugin file, an agent type the scenario names)
/// exit 2; anything else 1.
int failed(std::ostream& err, const error& e) {
  if (e.code() == errc::validation || e.code() == errc::not_found) return usage(err, e);
  err << "af: " << e.to_string() << "\n";
  return k_exit_failure;
}

double seconds_since(wall_clock::time_point t0) {
  return std::chrono::duration<double>(wall_clock::now() - t0).count();
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

/// A line on a terminal rewritten in place, at most four times a second, erased at the end.
class status_line {
public:
  status_line(std::ostream& err, bool enabled) : err_(err), enabled_(enabled) {}
  ~status_line() { clear(); }
  status_line(const status_line&) = delete;
  status_line& operator=(const status_line&) = delete;

  [[nodiscard]] bool enabled() const { return enabled_; }
  void show(const std::string& text) {
    if (!enabled_) return;
    const auto now = wall_clock::now();
    if (shown_ && now - last_ < std::chrono::milliseconds(250)) return;
    last_ = now;
    shown_ = true;
    err_ << "\r\033[K" << text << std::flush;
  }
  void clear() {
    if (!shown_) return;
    err_ << "\r\033[K" << std::flush;
    shown_ = false;
  }

private:
  std::ostream& err_;
  bool enabled_;
  bool shown_ = false;
  wall_clock::time_point last_{};
};

/// The agent types a simulated node offers beyond the simulator's own (std.*, sim.*): the
/// demo's, the user's extensions and the plugins.
expected<agent_catalog> sim_agents(const sim_state& st, const extensions& ext) {
  return load_agents(st.plugins, ext, [](plan::agent_types& agents, tool::registry& tools) {
    return demo::add_demo_plan_agents(agents, tools);
  });
}

/// The replay command of a seed, with the plugins the run needs.
std::string replay(const sim::scenario& sc, const sim_state& st, std::uint64_t seed) {
  auto cmd = sim::replay_command(sc, seed);
  for (const auto& p : st.plugins)
    cmd += " --plugin " + p;
  return cmd;
}

int sim_run(const sim_state& st, const extensions& ext, std::ostream& out, std::ostream& err) {
  auto sc = sim::load_scenario(st.file);
  if (!sc) return usage(err, sc.error());
  // Declared before the options that share its agent types: destroyed after them, so the
  // plugins' code stays mapped until the last factory is gone.
  auto catalog = sim_agents(st, ext);
  if (!catalog) return failed(err, catalog.error());
  sim::run_options opts;
  opts.seed = st.seed;
  if (!st.until.empty()) {
    auto until = parse_duration(st.until);
    if (!until) return usage(err, validation_error("--until " + until.error().message()));
    if (until->count() <= 0)
      return usage(err, validation_error("--until '" + st.until + "': expected a duration > 0"));
    opts.until = *until;
  }
  opts.trace_file = st.trace_file;
  opts.log_file = st.log_file;
  if (!st.history_file.empty() && !sc->kv_clients.enabled)
    return usage(err, validation_error("--history: scenario '" + sc->name
                                       + "' has no kv_clients section (no history to write)"));
  opts.history_file = st.history_file;
  opts.agents = catalog->agents;
  opts.tools = catalog->tools;
  status_line line{err, ::isatty(STDERR_FILENO) != 0};
  if (line.enabled())
    opts.on_progress = [&](const sim::progress& p) {
      const double total = static_cast<double>(p.run_until.count());
      const double pct =
          total > 0 ? 100.0 * static_cast<double>(p.virtual_time.count()) / total : 0;
      line.show("sim " + sc->name + " seed " + std::to_string(st.seed) + ": "
                + fixed(static_cast<double>(p.virtual_time.count()) / 1e9, 1) + "s / "
                + fixed(total / 1e9, 1) + "s virtual (" + fixed(pct, 0) + "%), "
                + std::to_string(p.delivered) + " delivered, " + fixed(p.wall_seconds, 1)
                + " s wall");
    };
  auto r = sim::run(*sc, opts);
  line.clear();
  if (!r) return failed(err, r.error());
  if (st.json) {
    auto j = r->to_json();
    j["file"] = sc->file;
    j["replay"] = replay(*sc, st, st.seed);
    out << j.dump() << "\n";
  } else {
    out << r->to_text();
    if (!r->ok()) out << "replay      " << replay(*sc, st, st.seed) << "\n";
  }
  return r->ok() ? k_exit_ok : k_exit_failure;
}

// ---- fuzz ------------------------------------------------------------------------------------

struct seed_range {
  std::uint64_t first = 0, last = 0;
};

expected<seed_range> parse_seeds(const std::string& text) {
  auto bad = [&] {
    return validation_error("--seeds '" + text
                            + "': expected A..B, two seeds with A <= B (for example 1..1000)");
  };
  const auto dots = text.find("..");
  if (dots == std::string::npos) return bad();
  auto number = [](std::string_view s, std::uint64_t& v) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return !s.empty() && ec == std::errc{} && end == s.data() + s.size();
  };
  seed_range r;
  if (!number(std::string_view{text}.substr(0, dots), r.first)
      || !number(std::string_view{text}.substr(dots + 2), r.last) || r.first > r.last)
    return bad();
  return r;
}

/// One seed's outcome as its worker process reported it.
struct seed_result {
  std::uint64_t seed = 0;
  bool failed = false;
  std::string invariant; ///< the first failing invariant ("" when the worker did not report)
  duration at{};
  std::string detail;
  std::string problem;     ///< why a worker without a report counts as failed
  std::string stderr_tail; ///< its last lines, for a worker without a report
};

/// A running worker process and what it has written so far.
struct worker {
  pid_t pid = -1;
  std::uint64_t seed = 0;
  int out_fd = -1, err_fd = -1;
  std::string out, err;
};

constexpr std::size_t k_stderr_keep = 64 * 1024;

/// The last `lines` lines of `text` (at most 4,000 characters), without the final newline.
std::string tail_lines(std::string text, std::size_t lines = 12) {
  while (!text.empty() && text.back() == '\n')
    text.pop_back();
  if (text.empty()) return text;
  std::size_t start = text.size();
  for (std::size_t n = 0; n < lines && start != std::string::npos && start > 0; ++n)
    start = text.rfind('\n', start - 1);
  text = start == std::string::npos ? text : text.substr(start + 1);
  return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
}

/// Starts `exe sim run FILE --seed N --json [--plugin P]...` with its stdout and stderr on pipes.
expected<worker> spawn_worker(const std::string& exe, const sim_state& st, std::uint64_t seed) {
  std::vector<std::string> args{"af",    "sim", "run", st.file, "--seed", std::to_string(seed),
                                "--json"};
  for (const auto& p : st.plugins) {
    args.emplace_back("--plugin");
    args.push_back(p);
  }
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0)
    return internal_error("pipe: " + std::string{std::strerror(errno)});
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int e = errno;
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return internal_error("pipe: " + std::string{std::strerror(e)});
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err_pipe[1], STDERR_FILENO);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return internal_error("cannot start the worker process " + exe + ": " + std::strerror(rc));
  }
  worker w;
  w.pid = pid;
  w.seed = seed;
  w.out_fd = out_pipe[0];
  w.err_fd = err_pipe[0];
  return w;
}

/// What a finished worker says: its JSON report (exit 0 or 1), or else how it ended.
seed_result judge(const worker& w, int wait_status) {
  seed_result r;
  r.seed = w.seed;
  const bool exited = WIFEXITED(wait_status);
  const int code = exited ? WEXITSTATUS(wait_status) : -1;
  auto j = nlohmann::json::parse(w.out, nullptr, false);
  const bool reported = !j.is_discarded() && j.is_object() && j.contains("ok")
                        && j["ok"].is_boolean() && j.contains("invariants")
                        && j["invariants"].is_array();
  const bool ok = reported && j["ok"].get<bool>();
  if (reported && ((code == k_exit_ok && ok) || (code == k_exit_failure && !ok))) {
    r.failed = !ok;
    for (const auto& inv : j["invariants"]) {
      if (!inv.is_object() || inv.value("ok", true)) continue;
      r.invariant = inv.value("name", std::string{"?"});
      r.detail = inv.value("detail", std::string{});
      r.at = duration{inv.value("at_ns", std::int64_t{0})};
      break;
    }
    return r;
  }
  r.failed = true;
  if (!exited)
    r.problem = "killed by signal " + std::to_string(WTERMSIG(wait_status)) + " ("
                + strsignal(WTERMSIG(wait_status)) + ")";
  else if (code == k_exit_usage)
    r.problem = "exited with 2 (the scenario, a plugin or an agent type was refused)";
  else
    r.problem = "exited with " + std::to_string(code) + " without a report";
  r.stderr_tail = tail_lines(w.err);
  return r;
}

std::string virtual_seconds(duration d) {
  return fixed(static_cast<double>(d.count()) / 1e9, 3) + "s";
}

void print_failure(const seed_result& r, const std::string& replay_cmd, std::ostream& out) {
  out << "seed " << r.seed << ": ";
  if (!r.invariant.empty()) {
    out << "FAILED invariant " << r.invariant << " at virtual time " << virtual_seconds(r.at);
    if (!r.detail.empty()) out << ": " << r.detail;
    out << "\n";
  } else {
    out << "FAILED: the worker " << r.problem << "\n";
    if (!r.stderr_tail.empty()) {
      std::size_t start = 0;
      while (start < r.stderr_tail.size()) {
        auto nl = r.stderr_tail.find('\n', start);
        if (nl == std::string::npos) nl = r.stderr_tail.size();
        out << "  | " << r.stderr_tail.substr(start, nl - start) << "\n";
        start = nl + 1;
      }
    }
  }
  out << "  replay: " << replay_cmd << "\n" << std::flush;
}

int sim_fuzz(const sim_state& st, const extensions& ext, std::ostream& out, std::ostream& err) {
  // Everything a worker would refuse is checked once here, before any process starts.
  auto sc = sim::load_scenario(st.file);
  if (!sc) return usage(err, sc.error());
  auto range = parse_seeds(st.seeds);
  if (!range) return usage(err, range.error());
  if (auto catalog = sim_agents(st, ext); !catalog) return failed(err, catalog.error());

  const std::string exe = "/proc/self/exe"; // this binary: a user's own node binary included
  const auto t0 = wall_clock::now();
  const std::uint64_t total = range->last - range->first + 1;
  status_line line{err, ::isatty(STDERR_FILENO) != 0};
  std::vector<worker> running;
  std::vector<seed_result> failures;
  std::uint64_t next = range->first, done = 0;
  bool more = true, stopped = false;

  auto finish = [&](worker& w) {
    int ws = 0;
    while (::waitpid(w.pid, &ws, 0) < 0 && errno == EINTR) {
    }
    auto r = judge(w, ws);
    ++done;
    if (r.failed) {
      line.clear();
      if (!st.json) print_failure(r, replay(*sc, st, r.seed), out);
      failures.push_back(std::move(r));
    }
    line.show("fuzz " + sc->name + ": " + std::to_string(done) + "/" + std::to_string(total)
              + " seeds, " + std::to_string(failures.size()) + " failed, "
              + fixed(seconds_since(t0), 1) + " s");
  };

  // On an error of our own, the workers already running are stopped and reaped.
  auto abandon = [&](const error& e) {
    for (auto& w : running) {
      ::kill(w.pid, SIGTERM);
      for (int fd : {w.out_fd, w.err_fd})
        if (fd >= 0) ::close(fd);
      while (::waitpid(w.pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    line.clear();
    return failed(err, e);
  };

  while (more || !running.empty()) {
    if (st.stop_after > 0 && failures.size() >= st.stop_after && more) {
      more = false;
      stopped = true;
    }
    while (more && running.size() < st.jobs) {
      auto w = spawn_worker(exe, st, next);
      if (!w) return abandon(w.error());
      running.push_back(std::move(*w));
      if (next == range->last)
        more = false;
      else
        ++next;
    }
    std::vector<pollfd> fds;
    for (const auto& w : running) {
      if (w.out_fd >= 0) fds.push_back({w.out_fd, POLLIN, 0});
      if (w.err_fd >= 0) fds.push_back({w.err_fd, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return abandon(internal_error("poll: " + std::string{std::strerror(errno)}));
    }
    for (const auto& p : fds) {
      if (p.revents == 0) continue;
      for (auto& w : running) {
        const bool is_out = p.fd == w.out_fd;
        if (!is_out && p.fd != w.err_fd) continue;
        char buf[8192];
        const auto n = ::read(p.fd, buf, sizeof buf);
        if (n > 0) {
          auto& text = is_out ? w.out : w.err;
          text.append(buf, static_cast<std::size_t>(n));
          if (!is_out && text.size() > 2 * k_stderr_keep)
            text.erase(0, text.size() - k_stderr_keep);
        } else if (n == 0 || errno != EINTR) {
          ::close(p.fd);
          (is_out ? w.out_fd : w.err_fd) = -1;
        }
        break;
      }
    }
    for (auto it = running.begin(); it != running.end();) {
      if (it->out_fd < 0 && it->err_fd < 0) {
        finish(*it);
        it = running.erase(it);
      } else {
        ++it;
      }
    }
  }
  line.clear();

  std::sort(failures.begin(), failures.end(),
            [](const seed_result& a, const seed_result& b) { return a.seed < b.seed; });
  const double wall = seconds_since(t0);
  if (st.json) {
    auto list = nlohmann::json::array();
    for (const auto& f : failures) {
      nlohmann::json j{{"seed", f.seed}, {"replay", replay(*sc, st, f.seed)}};
      if (!f.invariant.empty()) {
        j["invariant"] = f.invariant;
        j["at_ns"] = f.at.count();
        j["detail"] = f.detail;
      } else {
        j["problem"] = f.problem;
        j["stderr_tail"] = f.stderr_tail;
      }
      list.push_back(std::move(j));
    }
    out << nlohmann::json{{"scenario", sc->name},
                          {"file", sc->file},
                          {"seeds", {{"first", range->first}, {"last", range->last}}},
                          {"run", done},
                          {"failed", failures.size()},
                          {"stopped_early", stopped},
                          {"wall_seconds", wall},
                          {"failures", std::move(list)}}
               .dump()
        << "\n";
  } else {
    std::string failed_seeds;
    for (std::size_t i = 0; i < failures.size() && i < 20; ++i)
      failed_seeds += (i == 0 ? "" : ", ") + std::to_string(failures[i].seed);
    if (failures.size() > 20) failed_seeds += ", ...";
    out << "fuzz " << sc->name << ": " << done << " seeds run (" << range->first << ".."
        << range->last << "), " << failures.size() << " failed"
        << (failures.empty() ? "" : " (seeds " + failed_seeds + ")") << ", " << fixed(wall, 3)
        << " s wall";
    if (stopped)
      out << "; stopped after " << failures.size() << " failures, seeds " << next << ".."
          << range->last << " not run";
    out << "\n";
  }
  return failures.empty() ? k_exit_ok : k_exit_failure;
}

} // namespace

runner add_sim_commands(CLI::App& app, std::ostream& out, std::ostream& err,
                        const extensions& ext) {
  auto st = std::make_shared<sim_state>();
  auto* sim = app.add_subcommand(
      "sim", "run agents under the deterministic simulator (docs/simulation.md)");
  sim->require_subcommand(1);

  auto* run = sim->add_subcommand(
      "run", "simulate a scenario with one seed and print the report: trace hash, virtual time,\n"
             "message counts, faults and the invariants (exit 0: every invariant holds,\n"
             "1: one failed, 2: invalid scenario or flags)\n\nExample:\n"
             "  af sim run examples/sim/work-exchange.yaml --seed 7\n"
             "  af sim run examples/sim/work-exchange.yaml --seed 7 --json --trace /tmp/t.jsonl\n"
             "  af sim run examples/sim/crash-storm.yaml --seed 3 --until 12s\n"
             "  af sim run examples/sim/raft-kv.yaml --seed 7 --history /tmp/h.jsonl");
  run->add_option("scenario", st->file, "the scenario file (YAML)")->required();
  run->add_option("--seed", st->seed, "the seed that decides every choice (default 1)");
  run->add_flag("--json", st->json, "print the report as JSON");
  run->add_option("--trace", st->trace_file,
                  "write every delivered envelope to FILE as JSON lines");
  run->add_option("--until", st->until,
                  "stop at this virtual time (30s, 1.5m): for debugging a failing seed");
  run->add_option("--log", st->log_file, "write the simulated nodes' logs to FILE (JSON lines)");
  run->add_option("--history", st->history_file,
                  "write the kv clients' operations to FILE as JSON lines (a scenario with\n"
                  "kv_clients; docs/simulation.md, \"The clients' history\")");
  run->add_option("--plugin", st->plugins, "load agent types and tools from a plugin (repeatable)");

  auto* fuzz = sim->add_subcommand(
      "fuzz", "simulate a scenario with every seed of a range in worker processes and print\n"
              "each failing seed with its failing invariant and the command that replays it\n"
              "(exit 0: every seed passed, 1: a seed failed, 2: invalid scenario or flags)\n\n"
              "Example:\n"
              "  af sim fuzz examples/sim/planted-bug.yaml --seeds 1..1000 --jobs 2\n"
              "  af sim fuzz examples/sim/work-exchange.yaml --seeds 1..50 --stop-after 1 --json");
  fuzz->add_option("scenario", st->file, "the scenario file (YAML)")->required();
  fuzz->add_option("--seeds", st->seeds, "the seeds to run, A..B (inclusive)")->required();
  fuzz->add_option("--jobs", st->jobs, "worker processes at once (default 2)")
      ->check(CLI::Range(1, 256));
  fuzz->add_option("--stop-after", st->stop_after, "start no new seed after this many failures")
      ->check(CLI::Range(1, 1'000'000));
  fuzz->add_flag("--json", st->json, "print one JSON summary with every failure");
  fuzz->add_option("--plugin", st->plugins,
                   "load agent types and tools from a plugin (repeatable; passed to the workers)");

  return [=, &out, &err]() -> std::optional<int> {
    if (run->parsed()) return sim_run(*st, ext, out, err);
    if (fuzz->parsed()) return sim_fuzz(*st, ext, out, err);
    return std::nullopt;
  };
}

} // namespace af::cli::detail
