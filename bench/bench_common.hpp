// Shared helpers of the benchmark executables: timing, per-run statistics, the JSON line format of
// CONVENTIONS.md ("Benchmarks") and small process helpers. Header-only, no CAF, no runtime.
//
// Every scenario is repeated `runs` times (agent and baseline runs interleaved). One run yields a
// headline value (a latency median, a rate, a size) and optionally the samples it was made of.
// The JSON object of a scenario reports:
//   median, min, max  the median / minimum / maximum of the runs' headline values;
//   p50, p99          the median over runs of each run's 50th / 99th sample percentile. For
//                     rates the percentiles are taken over sample *durations* and converted back
//                     to a rate, so p99 is the slow tail (p99 <= p50). Without samples they are
//                     percentiles of the runs' values;
//   n                 operations measured over all runs (round trips, messages, hashes, agents);
//   runs              number of runs.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <time.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace bench {

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "bench: %s\n", what.c_str());
  std::exit(1);
}

/// CPU seconds this process has used (all threads).
inline double process_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/// A fresh temporary directory /tmp/PREFIX-XXXXXX, deleted with its contents.
class temp_dir {
public:
  explicit temp_dir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) die("mkdtemp failed");
    path_ = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] std::string db() const { return (path_ / "agentflow.db").string(); }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

using clock = std::chrono::steady_clock;

inline double seconds_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// CPU time consumed by the calling thread, in seconds (CLOCK_THREAD_CPUTIME_ID): for
/// single-threaded CPU-bound loops on a shared machine, where wall time would also count the
/// time the thread spent preempted by other processes.
inline double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/// Percentile `q` in [0, 1] of `v` (nearest rank on a sorted copy); 0 for an empty vector.
inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// What one run measured. For a latency scenario, `samples` are latencies and `value` is their
/// median; for a rate scenario `samples` are durations of `ops_per_sample` operations each and
/// `value` is the run's overall rate.
struct run {
  double value = 0;
  std::vector<double> samples;
  double ops_per_sample = 1;
  std::size_t ops = 0;
};

enum class kind { latency, rate, plain };

/// The aggregated figures of one variant over all runs.
struct summary {
  std::string unit;
  std::size_t n = 0;
  std::size_t runs = 0;
  double median = 0, p50 = 0, p99 = 0, min = 0, max = 0;
  /// Optional second figure for the same runs (e.g. MB/s next to envelopes/s).
  std::optional<std::pair<std::string, double>> extra;
};

inline summary summarize(const std::vector<run>& rs, kind k, std::string unit) {
  summary s;
  s.unit = std::move(unit);
  s.runs = rs.size();
  std::vector<double> values, p50s, p99s;
  for (const auto& r : rs) {
    values.push_back(r.value);
    s.n += r.ops;
    if (r.samples.empty()) continue;
    if (k == kind::rate) {
      // Durations: the 99th percentile duration is the slow tail, i.e. the low rate.
      p50s.push_back(r.ops_per_sample / percentile(r.samples, 0.50));
      p99s.push_back(r.ops_per_sample / percentile(r.samples, 0.99));
    } else {
      p50s.push_back(percentile(r.samples, 0.50));
      p99s.push_back(percentile(r.samples, 0.99));
    }
  }
  s.median = median(values);
  s.min = values.empty() ? 0 : *std::min_element(values.begin(), values.end());
  s.max = values.empty() ? 0 : *std::max_element(values.begin(), values.end());
  if (p50s.empty()) {
    s.p50 = percentile(values, 0.50);
    s.p99 = percentile(values, 0.99);
  } else {
    s.p50 = median(p50s);
    s.p99 = median(p99s);
  }
  return s;
}

/// A target on the ratio (agent / baseline) or on the median itself.
struct target {
  std::string metric; // "ratio", "median" or "p99"
  std::string op;     // "<=", ">=", "<", ">"
  double value = 0;
  [[nodiscard]] bool met(double x) const {
    if (op == "<=") return x <= value;
    if (op == ">=") return x >= value;
    if (op == "<") return x < value;
    return x > value;
  }
};

inline std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

inline std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

inline std::string fields(const summary& s) {
  std::ostringstream o;
  o << "\"n\":" << s.n << ",\"runs\":" << s.runs << ",\"median\":" << num(s.median)
    << ",\"p50\":" << num(s.p50) << ",\"p99\":" << num(s.p99) << ",\"min\":" << num(s.min)
    << ",\"max\":" << num(s.max) << ",\"unit\":\"" << json_escape(s.unit) << "\"";
  if (s.extra) o << ",\"" << json_escape(s.extra->first) << "\":" << num(s.extra->second);
  return o.str();
}

/// Prints one scenario as one JSON line on stdout. `title` is a human description (the doc's
/// table uses it); `baseline_name` names what the baseline is.
inline void emit(const std::string& name, const std::string& title, const summary& s,
                 const summary* baseline = nullptr, const std::string& baseline_name = {},
                 const std::optional<target>& t = std::nullopt, const std::string& note = {}) {
  std::ostringstream o;
  o << "{\"name\":\"" << json_escape(name) << "\",\"title\":\"" << json_escape(title) << "\","
    << fields(s);
  std::optional<double> ratio;
  if (baseline != nullptr) {
    ratio = baseline->median != 0 ? s.median / baseline->median : NAN;
    o << ",\"baseline\":{\"name\":\"" << json_escape(baseline_name) << "\"," << fields(*baseline)
      << "},\"ratio\":" << num(*ratio);
  }
  if (t) {
    double x = t->metric == "ratio" && ratio ? *ratio : t->metric == "p99" ? s.p99 : s.median;
    o << ",\"target\":{\"metric\":\"" << t->metric << "\",\"op\":\"" << json_escape(t->op)
      << "\",\"value\":" << num(t->value) << "},\"met\":" << (t->met(x) ? "true" : "false");
  }
  if (!note.empty()) o << ",\"note\":\"" << json_escape(note) << "\"";
  o << "}\n";
  std::fputs(o.str().c_str(), stdout);
  std::fflush(stdout);
}

/// Peak RSS since the last reset_peak_rss() (VmHWM of /proc/self/status), in bytes.
inline std::size_t peak_rss_bytes() {
  std::ifstream in{"/proc/self/status"};
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

/// Resets VmHWM to the current RSS (Linux >= 4.0).
inline void reset_peak_rss() {
  std::ofstream out{"/proc/self/clear_refs"};
  out << "5";
}

/// Resident set size of this process in bytes (/proc/self/statm, second field).
inline std::size_t rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  std::size_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// `--help` or `-h` anywhere: says where the options are documented and exits without running
/// anything (a bench that ran on `--help` would disturb whatever else is being measured). Every
/// option lookup checks, so a bench stops at its first one.
inline void exit_if_help(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a != "--help" && a != "-h") continue;
    std::string exe = argv[0];
    exe = exe.substr(exe.rfind('/') + 1);
    std::string src = exe.starts_with("af_bench_") ? exe.substr(9) + "_bench.cpp" : exe + ".cpp";
    std::printf("%s: options are `--flag VALUE` pairs (e.g. --runs 5), listed with their defaults "
                "in the comment at the top of bench/%s; `python3 bench/run_all.py --help` runs "
                "the benchmarks together. Nothing was run.\n",
                exe.c_str(), src.c_str());
    std::exit(0);
  }
}

/// `--runs N` style integer option, else `fallback`.
inline long int_option(int argc, char** argv, const std::string& flag, long fallback) {
  exit_if_help(argc, argv);
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == flag) return std::stol(argv[i + 1]);
  return fallback;
}

/// `--variant agent` style string option, else `fallback`.
inline std::string string_option(int argc, char** argv, const std::string& flag,
                                 const std::string& fallback) {
  exit_if_help(argc, argv);
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == flag) return argv[i + 1];
  return fallback;
}

} // namespace bench
