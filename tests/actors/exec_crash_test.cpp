// Durable execution under SIGKILL (issue 5): a child `af node start` runs 100 executions of a
// plan with five std.ledger steps (sequential and in a fan-out, with a sleep and a wait between
// them), is SIGKILLed at seeded random moments (while it starts and recovers, while submissions
// are in flight, or while executions run) and restarted on the same data directory each time.
// Executions are submitted with `af submit
// --id` while the node runs; a submission whose answer was lost to a kill is submitted again
// with the same id after the restart. At the end every execution must have completed exactly
// once, without a failure, and the `ledger` table must hold exactly one row per (execution,
// ledger step): none lost, none doubled. Resubmitting a completed id must change nothing.
//
// AF_CRASH_SEED=N reruns a given seed (the seed is printed); AF_CRASH_RUNS=N changes the number
// of kills (20); AF_TEST_AF_BINARY=PATH runs another `af`; AF_CRASH_KEEP_LOGS=DIR keeps the
// children's output and the data directory.
#include "af/v1/exec.pb.h"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr int k_executions = 100;
constexpr std::size_t k_submitters = 3; ///< `af submit` processes at once (2 cores)
constexpr const char* k_plan = R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: crash-ledger}
spec:
  type: dag
  inputs:
    items: {default: [10, 20, 30]}
  steps:
    - id: open
      agent: std.ledger
      input: {amount: 1}
    - id: settle
      agent: std.sleep
      input: {duration: 400ms}
      after: [open]
    - id: pay
      for_each: "${inputs.items}"
      agent: std.ledger
      input: {amount: "${item}"}
      after: [settle]
    - id: cool
      wait: 200ms
      after: [pay]
    - id: close
      agent: std.ledger
      input: {amount: 2}
      after: [cool]
)";
const std::vector<std::string> k_ledger_steps{"open", "pay[0]", "pay[1]", "pay[2]", "close"};

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

std::string af_binary() {
  const char* v = std::getenv("AF_TEST_AF_BINARY");
  return v != nullptr && *v != '\0' ? std::string{v} : std::string{AF_BINARY};
}

std::string tail_of(const fs::path& path, std::size_t max = 3000) {
  std::ifstream in{path, std::ios::binary};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  return s.size() > max ? "..." + s.substr(s.size() - max) : s;
}

std::string exec_id(int i) {
  std::ostringstream s;
  s << "crash-" << std::setw(3) << std::setfill('0') << i;
  return s.str();
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "died of signal " + std::to_string(WTERMSIG(status));
  return "ended (status " + std::to_string(status) + ")";
}

/// A child process, SIGKILLed and reaped when the object goes: a failing test never leaks one
/// (and PR_SET_PDEATHSIG kills it should this process die without unwinding).
class child {
public:
  child() = default;
  /// Runs `args` (args[0] is the program) with stdout and stderr to files and the environment
  /// of this process without its AF_* variables (a child reads its configuration from those).
  static child spawn(const std::vector<std::string>& args, const fs::path& out,
                     const fs::path& err) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "AF_", 3) != 0) env.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& e : env)
      envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> a = args;
    std::vector<char*> argv;
    for (auto& s : a)
      argv.push_back(s.data());
    argv.push_back(nullptr);
    const int in_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    auto close_fds = [&] {
      for (int fd : {in_fd, out_fd, err_fd})
        if (fd >= 0) ::close(fd);
    };
    if (in_fd < 0 || out_fd < 0 || err_fd < 0) {
      const int e = errno;
      close_fds();
      FAIL("open " << out << " / " << err << ": " << std::strerror(e));
    }
    child c;
    c.out_ = out;
    c.err_ = err;
    const pid_t parent = ::getpid();
    c.pid_ = ::fork();
    if (c.pid_ == 0) {
      // Only async-signal-safe calls until execve. The child dies with this process even if
      // it is SIGKILLed (a ctest timeout) and cannot run the destructors.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(126);
      if (::dup2(in_fd, STDIN_FILENO) < 0 || ::dup2(out_fd, STDOUT_FILENO) < 0
          || ::dup2(err_fd, STDERR_FILENO) < 0)
        ::_exit(126);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    const int e = errno;
    close_fds();
    if (c.pid_ < 0) {
      c.pid_ = -1;
      FAIL("fork for " << a[0] << ": " << std::strerror(e));
    }
    return c;
  }
  child(child&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)), status_(o.status_), out_(std::move(o.out_)),
        err_(std::move(o.err_)) {}
  child& operator=(child&& o) noexcept {
    if (this != &o) {
      kill_and_reap();
      pid_ = std::exchange(o.pid_, -1);
      status_ = o.status_;
      out_ = std::move(o.out_);
      err_ = std::move(o.err_);
    }
    return *this;
  }
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() { kill_and_reap(); }

  /// The wait status once it ended (reaping it), else nullopt.
  std::optional<int> poll() {
    if (pid_ <= 0) return status_;
    int st = 0;
    pid_t r = 0;
    while ((r = ::waitpid(pid_, &st, WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r == 0) return std::nullopt;
    pid_ = -1;
    status_ = r < 0 ? -1 : st;
    return status_;
  }
  /// Waits up to `timeout` for it to end; nullopt when it is still running.
  std::optional<int> wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    for (;;) {
      if (auto s = poll()) return s;
      if (steady::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(5ms);
    }
  }
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  /// SIGKILL and reap; returns the wait status (that of an earlier end if it had ended).
  std::optional<int> kill_and_reap() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    status_ = st;
    return status_;
  }
  [[nodiscard]] bool running() const { return pid_ > 0; }
  [[nodiscard]] const fs::path& out() const { return out_; }
  [[nodiscard]] const fs::path& err() const { return err_; }

private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  fs::path out_, err_;
};

/// A read-write connection to the node's SQLite file (the node may be running: WAL readers).
class db_reader {
public:
  explicit db_reader(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      std::string msg = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      FAIL("sqlite3_open_v2 " << path << ": " << msg);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  ~db_reader() { sqlite3_close(db_); }
  db_reader(const db_reader&) = delete;
  db_reader& operator=(const db_reader&) = delete;

  /// Each row as strings; a missing table yields no rows when `missing_ok`.
  std::vector<std::vector<std::string>> rows(const std::string& sql, bool missing_ok = false) {
    std::vector<std::vector<std::string>> out;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      std::string msg = sqlite3_errmsg(db_);
      sqlite3_finalize(st);
      if (missing_ok && msg.find("no such table") != std::string::npos) return out;
      FAIL("sqlite: " << sql << ": " << msg);
    }
    int rc = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      std::vector<std::string> r;
      for (int c = 0; c < sqlite3_column_count(st); ++c) {
        const auto* b = static_cast<const char*>(sqlite3_column_blob(st, c));
        r.emplace_back(b != nullptr
                           ? std::string(b, static_cast<std::size_t>(sqlite3_column_bytes(st, c)))
                           : std::string{});
      }
      out.push_back(std::move(r));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) FAIL("sqlite: " << sql << ": " << sqlite3_errmsg(db_));
    return out;
  }

private:
  sqlite3* db_ = nullptr;
};

/// Per execution: how many ExecutionStarted/Completed/Failed/Canceled events its stream holds.
struct exec_state {
  int started = 0, completed = 0, failed = 0, canceled = 0;
};

std::map<std::string, exec_state> read_states(const std::string& db_path) {
  std::map<std::string, exec_state> out;
  if (!fs::exists(db_path)) return out;
  db_reader db{db_path};
  for (const auto& r : db.rows("SELECT s.stream, e.type, count(*) FROM events AS e JOIN streams AS"
                               " s ON s.id = e.stream_id WHERE s.stream LIKE 'exec/%' AND e.type IN"
                               " ('af.v1.ExecutionStarted', 'af.v1.ExecutionCompleted',"
                               " 'af.v1.ExecutionFailed', 'af.v1.ExecutionCanceled')"
                               " GROUP BY s.stream, e.type",
                               true)) {
    auto& s = out[r[0].substr(5)];
    const int n = std::stoi(r[2]);
    if (r[1] == "af.v1.ExecutionStarted") s.started += n;
    if (r[1] == "af.v1.ExecutionCompleted") s.completed += n;
    if (r[1] == "af.v1.ExecutionFailed") s.failed += n;
    if (r[1] == "af.v1.ExecutionCanceled") s.canceled += n;
  }
  return out;
}

/// One `af submit` in flight.
struct submission {
  int index = 0;
  child proc;
  steady::time_point at;
};

} // namespace

TEST_CASE("exec: executions of a ledger plan survive SIGKILLs of their node exactly once",
          "[exec][crash]") {
  const std::uint64_t seed = env_u64("AF_CRASH_SEED", 20240605);
  const int runs = static_cast<int>(env_u64("AF_CRASH_RUNS", 20));
  INFO("AF_CRASH_SEED=" << seed << " AF_CRASH_RUNS=" << runs << " (rerun with these)");
  std::cout << "exec crash test: AF_CRASH_SEED=" << seed << " AF_CRASH_RUNS=" << runs << std::endl;
  const std::string af = af_binary();
  REQUIRE(::access(af.c_str(), X_OK) == 0);
  std::mt19937_64 rng{seed};
  auto uniform = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>{lo, hi}(rng); };

  af::test::temp_dir tmp{"af-exec-crash"};
  const auto data_dir = tmp.path() / "data";
  const auto logs = tmp.path() / "logs";
  fs::create_directories(logs);
  const std::string plan_file = tmp.write("crash-ledger.yaml", k_plan);
  const auto port_file = tmp.path() / "node.port";
  const std::string db_path = (data_dir / "agentflow.db").string();
  // AF_CRASH_KEEP_LOGS=DIR keeps the nodes' and submitters' output (and the data dir) there.
  struct keep_logs {
    fs::path from;
    ~keep_logs() {
      const char* to = std::getenv("AF_CRASH_KEEP_LOGS");
      if (to == nullptr || *to == '\0') return;
      std::error_code ec;
      fs::create_directories(to, ec);
      fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
    }
  } keep{tmp.path()};

  std::vector<bool> accepted(k_executions, false);
  std::vector<int> submits(k_executions, 0); // `af submit` processes started per execution
  std::vector<std::string> problems;
  int in_flight_at_kills = 0, lost_answers = 0;
  std::array<int, 3> kills_by_mode{};
  std::vector<int> run_ms, ready_ms, unfinished_at_kill, submit_ms;
  int accepted_before_final = 0;
  const auto t_start = steady::now();

  child node;
  std::vector<submission> flying;
  std::string node_log; // the current node's stderr, for messages
  int accepted_in_run = 0;

  // Starts `af submit` for pending executions below `quota`, reaps those that ended.
  auto pump_submissions = [&](int port, int quota) {
    for (auto it = flying.begin(); it != flying.end();) {
      auto st = it->proc.poll();
      if (!st) {
        ++it;
        continue;
      }
      const std::string id = exec_id(it->index);
      submit_ms.push_back(static_cast<int>((steady::now() - it->at) / 1ms));
      if (WIFEXITED(*st) && WEXITSTATUS(*st) == 0) {
        auto j = nlohmann::json::parse(tail_of(it->proc.out()), nullptr, false);
        if (j.is_object() && j.value("execution_id", "") == id) {
          accepted[static_cast<std::size_t>(it->index)] = true;
          ++accepted_in_run;
        } else
          problems.push_back("af submit --id " + id + " printed: " + tail_of(it->proc.out()));
      } else {
        // The node is alive (a kill reaps the submitters first): a refused submission is a bug.
        problems.push_back("af submit --id " + id + " " + describe(*st)
                           + " while the node ran; stderr: " + tail_of(it->proc.err()));
      }
      it = flying.erase(it);
    }
    for (int i = 0; i < quota && flying.size() < k_submitters; ++i) {
      if (accepted[static_cast<std::size_t>(i)]) continue;
      if (std::any_of(flying.begin(), flying.end(),
                      [i](const submission& s) { return s.index == i; }))
        continue;
      const int n = ++submits[static_cast<std::size_t>(i)];
      const auto base = logs / ("submit-" + exec_id(i) + "-" + std::to_string(n));
      flying.push_back(submission{
          i,
          child::spawn({af, "submit", plan_file, "--connect", "127.0.0.1:" + std::to_string(port),
                        "--id", exec_id(i), "--json"},
                       base.string() + ".out", base.string() + ".err"),
          steady::now()});
    }
  };

  auto start_node = [&](int run) {
    fs::remove(port_file);
    const auto base = logs / ("node-" + std::to_string(run));
    node_log = base.string() + ".err";
    node = child::spawn({af, "node", "start", "--data-dir", data_dir.string(), "--listen",
                         "127.0.0.1:0", "--port-file", port_file.string(), "--no-demo-service"},
                        base.string() + ".out", node_log);
  };
  // The node's control port once it wrote its port file; 0 while it has not; fails if it died.
  auto node_port = [&]() -> int {
    if (auto st = node.poll())
      FAIL("the node " << describe(*st) << " by itself; stderr: " << tail_of(node_log));
    std::ifstream in{port_file};
    if (!in) return 0;
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_object() || !j.contains("listen_port")) return 0;
    const auto& p = j["listen_port"];
    return p.is_number() ? p.get<int>() : std::stoi(p.get<std::string>());
  };

  // Each run submits its share of the executions (and those whose answer an earlier kill cut
  // off), then the node dies at a seeded moment: while it starts and recovers, while the
  // submissions are in flight, or (most often) while the executions run.
  const int per_run = (k_executions + runs - 1) / std::max(1, runs);
  for (int run = 0; run < runs; ++run) {
    const auto t0 = steady::now();
    start_node(run);
    accepted_in_run = 0;
    const int quota = std::min(k_executions, (run + 1) * per_run);
    const int mode = uniform(0, 4); // 0: starting, 1: submitting, else running
    ++kills_by_mode[std::min(mode, 2)];
    steady::time_point kill_at;
    int port = 0;
    auto wait_port = [&] {
      const auto deadline = steady::now() + 30s;
      while ((port = node_port()) == 0) {
        if (steady::now() > deadline)
          FAIL("run " << run << ": no port file within 30 s; stderr: " << tail_of(node_log));
        std::this_thread::sleep_for(5ms);
      }
      ready_ms.push_back(static_cast<int>((steady::now() - t0) / 1ms));
    };
    if (mode == 0) {
      kill_at = t0 + std::chrono::milliseconds{uniform(0, 300)};
    } else if (mode == 1) {
      wait_port();
      kill_at = steady::now() + std::chrono::milliseconds{uniform(0, 600)};
    } else {
      // Timed from the first execution this run accepted: the batch runs (its later
      // submissions may still be in flight) and so do the executions recovered at the start.
      wait_port();
      const auto deadline = steady::now() + 60s;
      while (accepted_in_run == 0 && quota > 0) {
        pump_submissions(port, quota);
        if (std::all_of(accepted.begin(), accepted.begin() + quota, [](bool b) { return b; }))
          break;
        if (steady::now() > deadline)
          FAIL("run " << run
                      << ": no submission accepted within 60 s; stderr: " << tail_of(node_log));
        std::this_thread::sleep_for(5ms);
      }
      kill_at = steady::now() + std::chrono::milliseconds{uniform(0, 1000)};
    }
    while (steady::now() < kill_at) {
      if (port == 0) port = node_port();
      if (port != 0) pump_submissions(port, quota);
      std::this_thread::sleep_for(5ms);
    }
    if (auto st = node.poll())
      FAIL("run " << run << ": the node " << describe(*st)
                  << " before it was killed; stderr: " << tail_of(node_log));
    node.kill_and_reap();
    // Submissions in flight lose their answer: submitted again (same id) after the restart.
    for (auto& s : flying) {
      s.proc.kill_and_reap();
      ++lost_answers;
    }
    flying.clear();
    int unfinished = 0;
    for (const auto& [id, s] : read_states(db_path))
      if (s.completed + s.failed + s.canceled == 0) ++unfinished;
    in_flight_at_kills += unfinished;
    unfinished_at_kill.push_back(unfinished);
    run_ms.push_back(static_cast<int>((steady::now() - t0) / 1ms));
  }

  // The last start: no kill. Submit what is left, then wait for every execution to end.
  accepted_before_final = static_cast<int>(std::count(accepted.begin(), accepted.end(), true));
  start_node(runs);
  const auto final_start = steady::now();
  const auto deadline = final_start + 90s;
  int port = 0;
  for (;;) {
    if (steady::now() > deadline)
      FAIL(
          "the final node did not take all submissions within 90 s; stderr: " << tail_of(node_log));
    if (port == 0) port = node_port();
    if (port != 0) pump_submissions(port, k_executions);
    if (port != 0 && flying.empty()
        && std::all_of(accepted.begin(), accepted.end(), [](bool b) { return b; }))
      break;
    std::this_thread::sleep_for(5ms);
  }
  std::map<std::string, exec_state> states;
  for (;;) {
    states = read_states(db_path);
    int ended = 0;
    for (const auto& [id, s] : states)
      ended += s.completed + s.failed + s.canceled > 0 ? 1 : 0;
    if (ended >= k_executions) break;
    if (steady::now() > deadline) {
      std::string open;
      for (int i = 0; i < k_executions; ++i) {
        auto it = states.find(exec_id(i));
        if (it == states.end()
            || it->second.completed + it->second.failed + it->second.canceled == 0)
          open += " " + exec_id(i);
      }
      FAIL("executions still unfinished 90 s after the last start:" << open << "\nnode stderr: "
                                                                    << tail_of(node_log));
    }
    if (auto st = node.poll())
      FAIL("the final node " << describe(*st) << "; stderr: " << tail_of(node_log));
    std::this_thread::sleep_for(50ms);
  }
  const int settle_ms = static_cast<int>((steady::now() - final_start) / 1ms);

  // Resubmitting ended executions (same id) returns them as they are and runs nothing again.
  std::vector<child> again;
  for (int i : {0, k_executions / 2, k_executions - 1}) {
    const auto base = logs / ("resubmit-" + exec_id(i));
    again.push_back(
        child::spawn({af, "submit", plan_file, "--connect", "127.0.0.1:" + std::to_string(port),
                      "--id", exec_id(i), "--json"},
                     base.string() + ".out", base.string() + ".err"));
  }
  for (auto& c : again) {
    auto st = c.wait_for(60s);
    REQUIRE(st);
    INFO("resubmission stdout: " << tail_of(c.out()) << " stderr: " << tail_of(c.err()));
    CHECK(describe(*st) == "exited with 0");
    auto j = nlohmann::json::parse(tail_of(c.out()), nullptr, false);
    CHECK((j.is_object() ? j.value("status", "") : "") == "completed");
  }
  // Running executions (none are left) are listed by the node itself too.
  {
    const auto base = logs / "exec-list";
    auto list = child::spawn(
        {af, "exec", "list", "--connect", "127.0.0.1:" + std::to_string(port), "--json"},
        base.string() + ".out", base.string() + ".err");
    auto st = list.wait_for(60s);
    REQUIRE(st);
    INFO("af exec list stderr: " << tail_of(list.err()));
    CHECK(describe(*st) == "exited with 0");
    CHECK(nlohmann::json::parse(tail_of(list.out()), nullptr, false) == nlohmann::json::array());
  }
  { // A clean stop after all that.
    node.signal(SIGTERM);
    auto stopped = node.wait_for(30s);
    INFO("node stderr: " << tail_of(node_log));
    REQUIRE(stopped);
    CHECK(describe(*stopped) == "exited with 0");
  }

  const int total_ms = static_cast<int>((steady::now() - t_start) / 1ms);
  int resubmitted = 0;
  for (int n : submits)
    resubmitted += n > 1 ? 1 : 0;
  std::ostringstream summary;
  summary << "exec crash test: seed " << seed << ", " << runs << " kills (" << kills_by_mode[0]
          << " while starting, " << kills_by_mode[1] << " while submitting, " << kills_by_mode[2]
          << " while running), " << in_flight_at_kills << " unfinished executions at the kills, "
          << lost_answers << " submissions cut off, " << resubmitted
          << " executions submitted more than once; runs (ms):";
  for (int ms : run_ms)
    summary << " " << ms;
  std::sort(submit_ms.begin(), submit_ms.end());
  if (!submit_ms.empty())
    summary << "; af submit (ms): median " << submit_ms[submit_ms.size() / 2] << ", max "
            << submit_ms.back();
  summary << "; start to port file (ms):";
  for (int ms : ready_ms)
    summary << " " << ms;
  summary << "; unfinished executions at each kill:";
  for (int n : unfinished_at_kill)
    summary << " " << n;
  summary << "; " << accepted_before_final << " submissions accepted before the last start"
          << "; last start to all ended " << settle_ms << " ms; total " << total_ms << " ms";
  std::cout << summary.str() << std::endl;
  INFO(summary.str());

  for (const auto& p : problems)
    UNSCOPED_INFO(p);
  CHECK(problems.empty());
  if (runs >= 10) CHECK(in_flight_at_kills > 0); // the kills did hit running executions

  // Every execution started once and completed once; none failed or was canceled; no strays.
  states = read_states(db_path);
  CHECK(states.size() == static_cast<std::size_t>(k_executions));
  for (int i = 0; i < k_executions; ++i) {
    const auto id = exec_id(i);
    auto it = states.find(id);
    INFO("execution " << id);
    REQUIRE(it != states.end());
    CHECK(it->second.started == 1);
    CHECK(it->second.completed == 1);
    CHECK(it->second.failed == 0);
    CHECK(it->second.canceled == 0);
  }

  // Exactly one ledger row per (execution, ledger step).
  db_reader db{db_path};
  std::map<std::pair<std::string, std::string>, int> rows;
  for (const auto& r :
       db.rows("SELECT execution_id, step_id, count(*) FROM ledger GROUP BY execution_id, step_id"))
    rows[{r[0], r[1]}] = std::stoi(r[2]);
  std::vector<std::string> lost, doubled, stray;
  for (int i = 0; i < k_executions; ++i)
    for (const auto& step : k_ledger_steps) {
      auto it = rows.find({exec_id(i), step});
      if (it == rows.end())
        lost.push_back(exec_id(i) + "/" + step);
      else if (it->second != 1)
        doubled.push_back(exec_id(i) + "/" + step + " x" + std::to_string(it->second));
    }
  for (const auto& [k, n] : rows)
    if (std::find(k_ledger_steps.begin(), k_ledger_steps.end(), k.second) == k_ledger_steps.end()
        || k.first.rfind("crash-", 0) != 0)
      stray.push_back(k.first + "/" + k.second);
  auto joined = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v)
      s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  INFO("lost: " << joined(lost));
  INFO("doubled: " << joined(doubled));
  INFO("stray: " << joined(stray));
  CHECK(lost.empty());
  CHECK(doubled.empty());
  CHECK(stray.empty());
  CHECK(db.rows("SELECT count(*) FROM ledger")[0][0]
        == std::to_string(k_executions * k_ledger_steps.size()));
  // A row whose key is not the step's first attempt means a retry: allowed by the ledger's
  // contract only when the first attempt wrote nothing, which the count above already proves.
  const auto retried = db.rows("SELECT count(*) FROM ledger WHERE key NOT LIKE '%/1'")[0][0];

  // The journal agrees: each ledger step completed exactly once. A completion whose output says
  // `duplicate` is a step the node had applied but not journaled when it was killed: it was
  // dispatched again after the restart with the same idempotency key and wrote nothing.
  std::map<std::pair<std::string, std::string>, int> completions;
  std::vector<std::string> not_once;
  int redelivered = 0;
  for (const auto& r : db.rows("SELECT s.stream, e.payload FROM events AS e JOIN streams AS s ON"
                               " s.id = e.stream_id WHERE s.stream LIKE 'exec/%'"
                               " AND e.type = 'af.v1.StepCompleted'")) {
    af::v1::StepCompleted c;
    REQUIRE(c.ParseFromString(r[1]));
    if (std::find(k_ledger_steps.begin(), k_ledger_steps.end(), c.step_id())
        == k_ledger_steps.end())
      continue;
    ++completions[{r[0].substr(5), c.step_id()}];
    auto out = nlohmann::json::parse(c.output_json(), nullptr, false);
    if (!out.is_object() || !out.contains("key"))
      not_once.push_back(r[0] + " " + c.step_id() + " output " + c.output_json());
    else if (out.value("duplicate", false))
      ++redelivered;
  }
  for (int i = 0; i < k_executions; ++i)
    for (const auto& step : k_ledger_steps)
      if (auto n = completions[{exec_id(i), step}]; n != 1)
        not_once.push_back(exec_id(i) + "/" + step + " x" + std::to_string(n));
  INFO("ledger steps not completed exactly once (or with a strange output) in the journal: "
       << joined(not_once));
  CHECK(not_once.empty());
  std::cout << "exec crash test: ledger steps redelivered after a kill (applied before it, "
            << "journaled after it): " << redelivered
            << "; ledger rows from a retried attempt: " << retried << std::endl;
}
