// The determinism invariant (ARCHITECTURE.md 1), checked on the source: actor-side modules never
// read a wall clock, use a global RNG or start threads, except in the files that implement the
// real services.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

namespace fs = std::filesystem;

TEST_CASE("actor-side code takes time, randomness and threads only from the node's services",
          "[determinism]") {
  const fs::path root = AF_SOURCE_DIR;
  // The real clock and entropy live here; audit_verify.cpp is tool-side (af audit verify runs it
  // in its own process, never in an actor) and checks rows on several threads; the simulator's
  // stopwatch times a run for its report; the cluster transport's socket layer runs its own I/O
  // thread and real timers (it is I/O code, below the transport actor). Telling threads apart
  // (std::thread::id) starts none: the SQLite commit hub does it. The journal's backend thread
  // makes a blocking store's calls (SQL) and hands the results back as messages: I/O below the
  // agent, started only on a real node (context::threads_allowed() is false in the simulator).
  const std::set<std::string> allowed = {
      "runtime/src/real_clock.cpp", "runtime/src/transport_io.cpp",
      "persistence/src/audit_verify.cpp", "persistence/src/backend_thread.hpp",
      "sim/src/wall_clock.cpp"};
  const std::regex forbidden{
      R"(system_clock|steady_clock::now|high_resolution_clock|random_device|std::rand\(|[^_a-z]rand\(\)|std::thread(?!::id)|std::jthread|sleep_for|sleep_until|std::async\()"};
  std::size_t files = 0;
  std::vector<std::string> hits;
  for (const char* module : {"runtime", "supervision", "persistence", "actors", "sim"}) {
    if (!fs::exists(root / module)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / module)) {
      const auto ext = entry.path().extension();
      if (!entry.is_regular_file() || (ext != ".cpp" && ext != ".hpp" && ext != ".h")) continue;
      const auto rel = fs::relative(entry.path(), root).generic_string();
      ++files;
      if (allowed.contains(rel)) continue;
      std::ifstream in{entry.path()};
      std::string line;
      for (int n = 1; std::getline(in, line); ++n)
        if (std::regex_search(line, forbidden))
          hits.push_back(rel + ":" + std::to_string(n) + ": " + line);
    }
  }
  INFO("scanned " << files << " files");
  for (const auto& h : hits)
    UNSCOPED_INFO(h);
  REQUIRE(files > 10);
  REQUIRE(hits.empty());
}
