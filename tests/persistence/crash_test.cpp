// Crash safety of the journal and the audit chain: a child process (af_crash_appender, a node
// with the real journal agent and audit writer over SQLite, synchronous=FULL) appends from
// several agents at once and is SIGKILLed at seeded random moments, then restarted on the same
// store. Afterwards every append the child acknowledged (journal and audit replies both received)
// must be in the store with its exact payloads, no batch may be partly visible, each stream's
// versions must run 1..N without gaps, the audit chain must verify and hold a record for every
// acknowledged append (and none for an append that is not in the journal), and each restarted
// child must have continued the streams where the store left them.
//
// AF_CRASH_SEED=N reruns a given seed (the seed is printed); AF_CRASH_RUNS=N changes the number
// of kills (20).
#include "af/store/audit.hpp"
#include "af/store/backend.hpp"
#include "af/v1/audit.pb.h"
#include "persistence/crash/crash_payload.hpp"
#include "support/temp_dir.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

extern char** environ;

using namespace af;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;
using batch_key = std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>; // gen, appender, batch

std::string key_text(const batch_key& k) {
  return "run " + std::to_string(std::get<0>(k)) + " appender " + std::to_string(std::get<1>(k))
         + " batch " + std::to_string(std::get<2>(k));
}

/// One "ack" line of the child: an append whose journal and audit replies it received.
struct ack {
  std::string stream;
  std::uint64_t first = 0, last = 0, gen = 0, appender = 0, batch = 0, k = 0, audit_seq = 0;
  [[nodiscard]] batch_key key() const { return {gen, appender, batch}; }
  [[nodiscard]] std::string text() const {
    return key_text(key()) + " (" + std::to_string(k) + " events, " + stream + " versions "
           + std::to_string(first) + ".." + std::to_string(last) + ", audit seq "
           + std::to_string(audit_seq) + ")";
  }
};

struct run_result {
  std::uint64_t gen = 0;
  bool early = false;                           ///< killed before waiting for an ack
  std::map<std::string, std::uint64_t> started; ///< "start" lines: versions read at start
  std::vector<ack> acks;
  std::vector<std::string> problems;
  std::string stderr_path;
};

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

std::string tail_of(const std::string& path, std::size_t max = 2000) {
  std::ifstream in{path, std::ios::binary};
  std::string s{std::istreambuf_iterator<char>{in}, {}};
  return s.size() > max ? "..." + s.substr(s.size() - max) : s;
}

/// The child's stdout, read line by line with a deadline.
class line_reader {
public:
  explicit line_reader(int fd) : fd_(fd) {}
  /// Reads until `deadline`, EOF, or `stop(line)` is true; false at EOF.
  template <class F>
  bool pump(steady::time_point deadline, F&& on_line) {
    while (!eof_) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      if (left.count() <= 0) return true;
      pollfd p{fd_, POLLIN, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) continue;
      char buf[4096];
      const auto n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        eof_ = true;
        break;
      }
      partial_.append(buf, static_cast<std::size_t>(n));
      for (auto nl = partial_.find('\n'); nl != std::string::npos; nl = partial_.find('\n')) {
        auto line = partial_.substr(0, nl);
        partial_.erase(0, nl + 1);
        if (on_line(line)) return true;
      }
    }
    return false;
  }
  /// Bytes after the last newline (a line the child was killed while writing: never happens
  /// with one write(2) per line below PIPE_BUF).
  [[nodiscard]] const std::string& partial() const { return partial_; }

private:
  int fd_;
  bool eof_ = false;
  std::string partial_;
};

/// Parses one line of the child into `r`; returns true for an "ack" line.
bool parse_line(const std::string& line, run_result& r) {
  std::istringstream in{line};
  std::string word;
  in >> word;
  if (word == "ack") {
    ack a;
    if (in >> a.stream >> a.first >> a.last >> a.gen >> a.appender >> a.batch >> a.k
        >> a.audit_seq) {
      r.acks.push_back(std::move(a));
      return true;
    }
  } else if (word == "start") {
    std::string s;
    std::uint64_t v = 0;
    if (in >> s >> v) {
      r.started[s] = v;
      return false;
    }
  } else if (word == "ready") {
    return false;
  }
  r.problems.push_back("run " + std::to_string(r.gen) + ": unreadable line from the child: '" + line
                       + "'");
  return false;
}

/// Spawns the child on `db`, lets it append, SIGKILLs it after `delay` (counted from its first
/// ack, or from the spawn when `early`), reaps it and returns what it printed.
run_result run_child(const std::string& db, const std::filesystem::path& dir, std::uint64_t gen,
                     std::uint64_t seed, bool early, std::chrono::milliseconds delay) {
  run_result r;
  r.gen = gen;
  r.early = early;
  r.stderr_path = (dir / ("child-" + std::to_string(gen) + ".err")).string();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    r.problems.push_back("pipe2: " + std::string{std::strerror(errno)});
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, r.stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args{AF_CRASH_APPENDER,    db,  std::to_string(gen),
                                std::to_string(seed), "4", "120"};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, AF_CRASH_APPENDER, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    r.problems.push_back("posix_spawn " + std::string{AF_CRASH_APPENDER} + ": "
                         + std::strerror(rc));
    return r;
  }
  line_reader lines{fds[0]};
  auto on_line = [&](const std::string& l) { return parse_line(l, r); };
  const auto spawned = steady::now();
  bool alive = true;
  if (early) {
    alive = lines.pump(spawned + delay, [&](const std::string& l) {
      parse_line(l, r);
      return false;
    });
  } else {
    // Start-up under ASan (and SQLite recovery after a kill) takes a while: wait for one ack.
    alive = lines.pump(spawned + 60s, on_line);
    if (alive && r.acks.empty())
      r.problems.push_back("run " + std::to_string(gen) + ": no ack within 60 s of the start");
    if (alive)
      alive = lines.pump(steady::now() + delay, [&](const std::string& l) {
        parse_line(l, r);
        return false;
      });
  }
  ::kill(pid, SIGKILL);
  // Everything written before the kill is in the pipe: read it to EOF.
  lines.pump(steady::now() + 30s, [&](const std::string& l) {
    parse_line(l, r);
    return false;
  });
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!lines.partial().empty())
    r.problems.push_back("run " + std::to_string(gen) + ": a partial line from the child: '"
                         + lines.partial() + "'");
  if (!alive || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
    std::string how = WIFEXITED(status)     ? "exited with " + std::to_string(WEXITSTATUS(status))
                      : WIFSIGNALED(status) ? "died of signal " + std::to_string(WTERMSIG(status))
                                            : "ended";
    r.problems.push_back("run " + std::to_string(gen) + ": the child " + how
                         + " before it was killed; its stderr: " + tail_of(r.stderr_path));
  }
  return r;
}

struct parsed_payload {
  std::string stream;
  std::uint64_t gen = 0, appender = 0, batch = 0, index = 0, k = 0;
};

std::optional<parsed_payload> parse_payload(const std::string& p) {
  std::vector<std::string> f;
  std::size_t at = 0;
  for (int i = 0; i < 6; ++i) {
    auto bar = p.find('|', at);
    if (bar == std::string::npos) return std::nullopt;
    f.push_back(p.substr(at, bar - at));
    at = bar + 1;
  }
  parsed_payload out;
  out.stream = f[0];
  try {
    out.gen = std::stoull(f[1]);
    out.appender = std::stoull(f[2]);
    out.batch = std::stoull(f[3]);
    out.index = std::stoull(f[4]);
    out.k = std::stoull(f[5]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (out.k == 0 || out.k > test::k_crash_max_batch || out.index >= out.k) return std::nullopt;
  return out;
}

/// Where a batch sits in the journal.
struct stored_batch {
  std::string stream;
  std::uint64_t first = 0, last = 0;
  time_point committed_at{}; ///< the same for every append of one group commit
};

/// Checks the streams: versions 1..N, every batch whole, exact payloads. Fills `batches`.
void check_journal(store::backend& db, std::map<batch_key, stored_batch>& batches,
                   std::vector<std::string>& problems, std::size_t& event_count) {
  auto streams = db.list_streams("", "", "", 100000);
  if (!streams) {
    problems.push_back("list_streams: " + streams.error().to_string());
    return;
  }
  for (const auto& info : *streams) {
    std::vector<store::event_record> ev;
    for (std::uint64_t from = 1;;) {
      auto page = db.read(info.stream, from, 1000);
      if (!page) {
        problems.push_back("read " + info.stream + ": " + page.error().to_string());
        return;
      }
      from += page->size();
      std::move(page->begin(), page->end(), std::back_inserter(ev));
      if (page->size() < 1000) break;
    }
    event_count += ev.size();
    if (ev.size() != info.version)
      problems.push_back(info.stream + ": the stream's version is " + std::to_string(info.version)
                         + " but it holds " + std::to_string(ev.size()) + " events");
    for (std::size_t i = 0; i < ev.size(); ++i)
      if (ev[i].version != i + 1) {
        problems.push_back(info.stream + ": version gap: event " + std::to_string(i + 1)
                           + " has version " + std::to_string(ev[i].version));
        break;
      }
    for (std::size_t i = 0; i < ev.size();) {
      const auto& e = ev[i];
      auto p = parse_payload(e.payload);
      if (!p || p->stream != info.stream || e.type != test::k_crash_event_type) {
        problems.push_back(info.stream + " version " + std::to_string(e.version)
                           + ": not an event of this test (type '" + e.type + "', payload '"
                           + e.payload.substr(0, 60) + "')");
        ++i;
        continue;
      }
      const batch_key key{p->gen, p->appender, p->batch};
      if (p->index != 0) {
        problems.push_back("partial batch: " + info.stream + " version " + std::to_string(e.version)
                           + " holds event " + std::to_string(p->index) + " of "
                           + std::to_string(p->k) + " of " + key_text(key)
                           + ", but its event 0 is not right before it");
        ++i;
        continue;
      }
      std::size_t j = 0;
      for (; j < p->k && i + j < ev.size(); ++j) {
        const auto want = test::crash_payload(info.stream, p->gen, p->appender, p->batch, j, p->k);
        if (ev[i + j].payload != want) break;
      }
      if (j < p->k) {
        problems.push_back("partial batch: " + key_text(key) + " has " + std::to_string(p->k)
                           + " events but only " + std::to_string(j) + " are at " + info.stream
                           + " versions " + std::to_string(e.version) + ".."
                           + std::to_string(e.version + p->k - 1));
        i += std::max<std::size_t>(j, 1);
        continue;
      }
      stored_batch at{info.stream, e.version, e.version + p->k - 1, e.committed_at};
      if (auto [it, fresh] = batches.emplace(key, at); !fresh)
        problems.push_back(key_text(key) + " is stored twice: " + it->second.stream + " versions "
                           + std::to_string(it->second.first) + " and " + info.stream + " "
                           + std::to_string(at.first));
      i += p->k;
    }
  }
}

/// Checks the audit chain and maps each audited append to its seq.
void check_audit(store::backend& db, const std::map<batch_key, stored_batch>& batches,
                 std::map<batch_key, std::pair<std::uint64_t, v1::AuditRecord>>& audited,
                 std::vector<std::string>& problems, std::uint64_t& audit_count) {
  auto v = store::verify_chain(db);
  if (!v) {
    problems.push_back("verify_chain: " + v.error().to_string());
    return;
  }
  if (!v->intact())
    problems.push_back("the audit chain does not verify: " + v->why + " (first bad seq "
                       + std::to_string(*v->first_bad_seq) + ")");
  audit_count = v->count;
  for (std::uint64_t from = 1;;) {
    auto rows = db.audit_read(from, 4096);
    if (!rows) {
      problems.push_back("audit_read: " + rows.error().to_string());
      return;
    }
    for (const auto& row : *rows) {
      v1::AuditRecord rec;
      if (!rec.ParseFromString(row.record)) {
        problems.push_back("audit seq " + std::to_string(row.seq) + ": unreadable record");
        continue;
      }
      const auto& d = rec.details();
      auto num = [&](const char* f) -> std::uint64_t {
        auto it = d.find(f);
        return it == d.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
      };
      const batch_key key{num("gen"), num("appender"), num("batch")};
      if (rec.action() != test::k_crash_audit_action) {
        problems.push_back("audit seq " + std::to_string(row.seq) + ": unexpected action '"
                           + rec.action() + "'");
        continue;
      }
      // The child audits an append only after the journal acknowledged it.
      auto b = batches.find(key);
      if (b == batches.end() || b->second.stream != rec.subject() || b->second.first != num("first")
          || b->second.last != num("last"))
        problems.push_back("audit seq " + std::to_string(row.seq) + " records " + key_text(key)
                           + " at " + rec.subject() + " versions " + std::to_string(num("first"))
                           + ".." + std::to_string(num("last"))
                           + ", which the journal does not hold there");
      if (auto [it, fresh] = audited.emplace(key, std::make_pair(row.seq, rec)); !fresh)
        problems.push_back(key_text(key) + " is audited twice: seq "
                           + std::to_string(it->second.first) + " and " + std::to_string(row.seq));
    }
    from += rows->size();
    if (rows->size() < 4096) break;
  }
}

} // namespace

TEST_CASE("crash safety: SIGKILLed while appending, every acknowledged append survives",
          "[crash][journal][audit]") {
  const auto seed = env_u64("AF_CRASH_SEED", 20240611);
  const auto runs = env_u64("AF_CRASH_RUNS", 20);
  std::fprintf(stderr, "crash test: seed %llu (AF_CRASH_SEED=%llu to rerun), %llu kills\n",
               static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed),
               static_cast<unsigned long long>(runs));
  INFO("seed " << seed << " (rerun with AF_CRASH_SEED=" << seed << ")");
  test::temp_dir dir{"af-crash"};
  const auto db_path = (dir.path() / "agentflow.db").string();
  std::mt19937_64 rng{seed};
  const auto t0 = steady::now();

  std::vector<run_result> results;
  std::vector<std::string> problems;
  for (std::uint64_t gen = 0; gen < runs; ++gen) {
    // One run in six is killed at a random moment of its start (opening the store, recovery,
    // the first migrations); the others 50-400 ms after their first acknowledged append.
    const bool early = std::uniform_int_distribution<int>{0, 5}(rng) == 0;
    const auto delay =
        std::chrono::milliseconds{early ? std::uniform_int_distribution<int>{0, 300}(rng)
                                        : std::uniform_int_distribution<int>{50, 400}(rng)};
    auto r = run_child(db_path, dir.path(), gen, rng(), early, delay);
    std::fprintf(stderr, "crash test: run %llu killed %s%lld ms, %zu acks\n",
                 static_cast<unsigned long long>(gen), early ? "at start + " : "after first ack + ",
                 static_cast<long long>(delay.count()), r.acks.size());
    problems.insert(problems.end(), r.problems.begin(), r.problems.end());
    results.push_back(std::move(r));
  }

  // A restarted child continues where the store is: it reads versions at least as high as every
  // earlier acknowledged append, and its own appends come after them.
  std::map<std::string, std::uint64_t> acked_max;
  std::size_t ack_count = 0;
  for (const auto& r : results) {
    for (const auto& [stream, v] : r.started)
      if (v < acked_max[stream])
        problems.push_back("run " + std::to_string(r.gen) + " started with " + stream
                           + " at version " + std::to_string(v) + ", below version "
                           + std::to_string(acked_max[stream]) + " acknowledged earlier");
    if (!r.early && r.started.size() != test::k_crash_streams)
      problems.push_back("run " + std::to_string(r.gen) + " printed "
                         + std::to_string(r.started.size()) + " start lines, expected "
                         + std::to_string(test::k_crash_streams));
    std::map<std::string, std::uint64_t> before = acked_max;
    for (const auto& a : r.acks) {
      if (a.gen != r.gen)
        problems.push_back("run " + std::to_string(r.gen)
                           + " printed an ack of another run: " + a.text());
      if (a.first <= before[a.stream])
        problems.push_back("run " + std::to_string(r.gen) + " acknowledged " + a.text()
                           + ", not after version " + std::to_string(before[a.stream])
                           + " acknowledged by an earlier run");
      acked_max[a.stream] = std::max(acked_max[a.stream], a.last);
    }
    ack_count += r.acks.size();
  }

  auto db = store::open_url("sqlite:" + db_path);
  REQUIRE(db);
  std::map<batch_key, stored_batch> batches;
  std::size_t event_count = 0;
  check_journal(**db, batches, problems, event_count);
  std::map<batch_key, std::pair<std::uint64_t, v1::AuditRecord>> audited;
  std::uint64_t audit_count = 0;
  check_audit(**db, batches, audited, problems, audit_count);

  for (const auto& r : results)
    for (const auto& a : r.acks) {
      auto b = batches.find(a.key());
      if (b == batches.end())
        problems.push_back("acknowledged append missing from the journal: " + a.text());
      else if (b->second.stream != a.stream || b->second.first != a.first
               || b->second.last != a.last)
        problems.push_back("acknowledged append stored elsewhere: " + a.text() + " is at "
                           + b->second.stream + " versions " + std::to_string(b->second.first)
                           + ".." + std::to_string(b->second.last));
      auto au = audited.find(a.key());
      if (au == audited.end())
        problems.push_back("acknowledged audit record missing: " + a.text());
      else if (au->second.first != a.audit_seq)
        problems.push_back("audit record of " + a.text() + " is at seq "
                           + std::to_string(au->second.first));
    }

  // Group commit was exercised: some transactions carried appends of several batches.
  std::map<time_point, std::size_t> per_commit;
  for (const auto& [key, b] : batches)
    ++per_commit[b.committed_at];
  std::size_t grouped = 0;
  for (const auto& [t, n] : per_commit)
    if (n > 1) grouped += n;

  const auto secs = std::chrono::duration<double>(steady::now() - t0).count();
  std::fprintf(stderr,
               "crash test: %llu kills, %zu acknowledged appends, %zu batches and %zu events "
               "stored (%zu in shared commits), %llu audit records, %.1f s\n",
               static_cast<unsigned long long>(runs), ack_count, batches.size(), event_count,
               grouped, static_cast<unsigned long long>(audit_count), secs);
  if (!problems.empty()) {
    std::string all;
    for (std::size_t i = 0; i < problems.size() && i < 40; ++i)
      all += "\n  " + problems[i];
    if (problems.size() > 40)
      all += "\n  ... and " + std::to_string(problems.size() - 40) + " more";
    FAIL("seed " << seed << ": " << problems.size() << " problems:" << all);
  }
  CHECK(ack_count > runs); // the runs did append
  CHECK(audited.size() >= ack_count);
  CHECK(grouped > 0);
}
