// The report of a run (af/sim/simulation.hpp): JSON for `af sim run --json` and `af sim fuzz`,
// text for a terminal, and the command that replays a seed.
#include "af/sim/simulation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace af::sim {

namespace {

/// Virtual time as seconds with milliseconds: "12.500s" (the timeline's format).
std::string seconds_text(duration d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3fs", static_cast<double>(d.count()) / 1e9);
  return buf;
}

/// `s` as one shell word: as is when it has only safe characters, else single-quoted.
std::string shell_word(const std::string& s) {
  const bool safe = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || std::string_view{"_./=:,+@%-"}.find(c) != std::string_view::npos;
  });
  if (safe) return s;
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

constexpr std::size_t k_timeline_lines = 20;

} // namespace

double membership_figures::messages_per_member_period() const {
  return member_periods ? static_cast<double>(messages) / static_cast<double>(member_periods) : 0;
}

double membership_figures::false_dead_rate() const {
  return member_periods ? static_cast<double>(false_dead) / static_cast<double>(member_periods) : 0;
}

nlohmann::json membership_figures::to_json() const {
  auto cr = nlohmann::json::array();
  for (const auto& c : crashes)
    cr.push_back({{"node", c.node},
                  {"at_ns", c.at.count()},
                  {"first_detect_periods", c.first_detect_periods},
                  {"all_dead_periods", c.all_dead_periods},
                  {"restarted", c.restarted}});
  return {{"members", members},
          {"period_seconds", period_seconds},
          {"join_converge_periods", join_converge_periods},
          {"converged_at_end", converged_at_end},
          {"crashes", std::move(cr)},
          {"false_dead", false_dead},
          {"false_suspect", false_suspect},
          {"false_dead_views", false_dead_views},
          {"false_suspect_views", false_suspect_views},
          {"member_periods", member_periods},
          {"messages", messages},
          {"state_changes", state_changes},
          {"messages_per_member_period", messages_per_member_period()},
          {"false_dead_rate", false_dead_rate()}};
}

namespace {
/// The q-quantile (nearest rank) of `v`, -1 when empty.
double quantile(std::vector<double> v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}
} // namespace

nlohmann::json raft_figures::to_json() const {
  return {{"members", members},
          {"leaders_elected", leaders_elected},
          {"max_term", max_term},
          {"commit_index", commit_index},
          {"applied_entries", applied_entries},
          {"snapshots_installed", snapshots_installed},
          {"recoveries", recoveries},
          {"leader_crashes", leader_crashes},
          {"elect_after_crash_ms", elect_after_crash_ms},
          {"writes_sent", writes_sent},
          {"writes_acked", writes_acked},
          {"writes_failed", writes_failed},
          {"elect_after_crash_p50_ms", quantile(elect_after_crash_ms, 0.5)},
          {"elect_after_crash_p99_ms", quantile(elect_after_crash_ms, 0.99)}};
}

nlohmann::json ownership_figures::to_json() const {
  return {{"executor_starts", executor_starts},
          {"takeovers", takeovers},
          {"lease_expirations", lease_expirations},
          {"leases_lost", leases_lost},
          {"fenced", fenced},
          {"overlaps", overlaps},
          {"max_owners", max_owners}};
}

bool report::ok() const { return first_failure() == nullptr; }

const invariant_result* report::first_failure() const {
  auto it = std::find_if(invariants.begin(), invariants.end(),
                         [](const invariant_result& r) { return !r.ok; });
  return it == invariants.end() ? nullptr : &*it;
}

nlohmann::json report::to_json() const {
  auto inv = nlohmann::json::array();
  for (const auto& r : invariants)
    inv.push_back({{"name", r.name},
                   {"ok", r.ok},
                   {"checked", r.checked},
                   {"detail", r.detail},
                   {"at_ns", r.at.count()}});
  nlohmann::json out{{"scenario", scenario},
          {"seed", seed},
          {"ok", ok()},
          {"trace_hash", trace_hash},
          {"virtual_time_ns", virtual_time.count()},
          {"stopped_early", stopped_early},
          {"delivered", delivered},
          {"network_sent", network_sent},
          {"dropped", dropped},
          {"duplicated", duplicated},
          {"crashes", crashes},
          {"supervisor_restarts", supervisor_restarts},
          {"restarts", restarts},
          {"agents", agents},
          {"wall_seconds", wall_seconds},
          {"deliveries_per_second", deliveries_per_second},
          {"invariants", std::move(inv)},
          {"timeline", timeline}};
  if (membership) out["membership"] = membership->to_json();
  if (raft) out["raft"] = raft->to_json();
  if (ownership) out["ownership"] = ownership->to_json();
  if (kv)
    out["kv"] = {
        {"clients", kv->clients},   {"keys", kv->keys},       {"ops", kv->ops},
        {"returned", kv->returned}, {"unknown", kv->unknown}, {"puts", kv->puts},
        {"gets", kv->gets},         {"cas", kv->cas},         {"cas_ok", kv->cas_ok},
        {"attempts", kv->attempts}, {"retried", kv->retried}, {"check_states", kv->check_states}};
  // --- virtual agents (placement) ---
  if (virtual_agents) {
    const auto& v = *virtual_agents;
    out["virtual_agents"] = {{"activations", v.activations},
                             {"duplicate_activations", v.duplicate_activations},
                             {"deactivations", v.deactivations},
                             {"forwards", v.forwards},
                             {"fenced_appends", v.fenced_appends},
                             {"adds_sent", v.adds_sent},
                             {"adds_acked", v.adds_acked},
                             {"adds_failed", v.adds_failed},
                             {"events_in_journal", v.events_in_journal},
                             {"ops_written_twice", v.ops_written_twice},
                             {"acked_ops_missing", v.acked_ops_missing},
                             {"stale_replies", v.stale_replies}};
  }
  return out;
}

std::string report::to_text() const {
  std::ostringstream out;
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.3f s wall, %.0f deliveries/s", wall_seconds,
                deliveries_per_second);
  out << "scenario    " << scenario << "  seed " << seed << "\n"
      << "trace hash  " << trace_hash << "\n"
      << "virtual     " << seconds_text(virtual_time)
      << (stopped_early ? " (stopped early by --until)" : "") << "\n"
      << "messages    " << delivered << " delivered; network: " << network_sent << " sent, "
      << dropped << " dropped, " << duplicated << " duplicated\n"
      << "faults      " << crashes << (crashes == 1 ? " crash, " : " crashes, ") << restarts
      << (restarts == 1 ? " restart" : " restarts") << "\n"
      << (supervisor_restarts > 0
              ? "restarts    " + std::to_string(supervisor_restarts) + " by supervisors\n"
              : std::string{})
      << "agents      " << agents << "\n"
      << "wall        " << rate << "\n";
  if (membership) {
    const auto& m = *membership;
    char line[256];
    char joined[64] = "no join after the start";
    if (m.join_converge_periods >= 0)
      std::snprintf(joined, sizeof joined, "join converged in %.1f periods",
                    m.join_converge_periods);
    std::snprintf(line, sizeof line, "membership  %llu members, period %.3fs; %s%s\n",
                  static_cast<unsigned long long>(m.members), m.period_seconds, joined,
                  m.converged_at_end ? "" : "; NOT converged at the end");
    out << line;
    std::snprintf(line, sizeof line,
                  "            %.2f messages per member per period; %llu false dead, %llu false "
                  "suspect in %llu member-periods\n",
                  m.messages_per_member_period(), static_cast<unsigned long long>(m.false_dead),
                  static_cast<unsigned long long>(m.false_suspect),
                  static_cast<unsigned long long>(m.member_periods));
    out << line;
    for (const auto& c : m.crashes) {
      std::snprintf(line, sizeof line,
                    "            crash %s at %s: first detected after %.1f periods, dead in every "
                    "view after %.1f%s\n",
                    c.node.c_str(), seconds_text(c.at).c_str(), c.first_detect_periods,
                    c.all_dead_periods, c.restarted ? " (restarted)" : "");
      out << line;
    }
  }
  if (ownership) {
    const auto& o = *ownership;
    char line[256];
    std::snprintf(line, sizeof line,
                  "ownership   %llu executor starts, %llu takeovers, %llu stopped at their lease "
                  "deadline, %llu fenced; at most %llu node(s) running one execution\n",
                  static_cast<unsigned long long>(o.executor_starts),
                  static_cast<unsigned long long>(o.takeovers),
                  static_cast<unsigned long long>(o.lease_expirations),
                  static_cast<unsigned long long>(o.fenced),
                  static_cast<unsigned long long>(o.max_owners));
    out << line;
  }
  if (raft) {
    const auto& r = *raft;
    char line[256];
    std::snprintf(line, sizeof line,
                  "raft        %llu members; %llu leaders elected, max term %llu; commit index "
                  "%llu; %llu snapshots installed\n",
                  static_cast<unsigned long long>(r.members),
                  static_cast<unsigned long long>(r.leaders_elected),
                  static_cast<unsigned long long>(r.max_term),
                  static_cast<unsigned long long>(r.commit_index),
                  static_cast<unsigned long long>(r.snapshots_installed));
    out << line;
    if (r.writes_sent > 0) {
      std::snprintf(line, sizeof line, "            writes: %llu sent, %llu acked, %llu failed\n",
                    static_cast<unsigned long long>(r.writes_sent),
                    static_cast<unsigned long long>(r.writes_acked),
                    static_cast<unsigned long long>(r.writes_failed));
      out << line;
    }
    if (r.leader_crashes > 0) {
      std::snprintf(line, sizeof line,
                    "            %llu leader crashes; next leader after p50 %.1f ms, max %.1f ms "
                    "(%zu elected)\n",
                    static_cast<unsigned long long>(r.leader_crashes),
                    quantile(r.elect_after_crash_ms, 0.5), quantile(r.elect_after_crash_ms, 1.0),
                    r.elect_after_crash_ms.size());
      out << line;
    }
  }
  if (kv) {
    char line[256];
    std::snprintf(
        line, sizeof line,
        "kv clients  %u clients, %llu ops on %llu keys: %llu returned, %llu without "
        "return; %llu retried; %llu of %llu cas ok; %llu states checked\n",
        kv->clients, static_cast<unsigned long long>(kv->ops),
        static_cast<unsigned long long>(kv->keys), static_cast<unsigned long long>(kv->returned),
        static_cast<unsigned long long>(kv->unknown), static_cast<unsigned long long>(kv->retried),
        static_cast<unsigned long long>(kv->cas_ok), static_cast<unsigned long long>(kv->cas),
        static_cast<unsigned long long>(kv->check_states));
    out << line;
  }
  // --- virtual agents (placement) ---
  if (virtual_agents) {
    const auto& v = *virtual_agents;
    out << "placement   " << v.activations << " activations (" << v.duplicate_activations
        << " duplicate), " << v.deactivations << " deactivations, " << v.forwards
        << " forwards, " << v.fenced_appends << " fenced appends\n"
        << "            adds: " << v.adds_sent << " sent, " << v.adds_acked << " acked, "
        << v.adds_failed << " failed; " << v.events_in_journal << " in the journal, "
        << v.ops_written_twice << " written twice\n";
  }
  for (std::size_t i = 0; i < timeline.size() && i < k_timeline_lines; ++i)
    out << (i == 0 ? "timeline    " : "            ") << timeline[i] << "\n";
  if (timeline.size() > k_timeline_lines)
    out << "            ... " << timeline.size() - k_timeline_lines << " more (--json has all)\n";
  out << "invariants" << (invariants.empty() ? "  none checked" : "") << "\n";
  std::size_t width = 0;
  for (const auto& r : invariants)
    width = std::max(width, r.name.size());
  for (const auto& r : invariants) {
    out << "  " << (!r.checked ? "SKIPPED " : r.ok ? "OK      " : "FAILED  ") << r.name
        << std::string(width - r.name.size(), ' ') << "  at " << seconds_text(r.at);
    if (!r.detail.empty()) out << ": " << r.detail;
    out << "\n";
  }
  if (const auto* f = first_failure())
    out << "result      FAILED: invariant " << f->name << " at virtual time " << seconds_text(f->at)
        << " with seed " << seed << "\n";
  else if (stopped_early)
    out << "result      STOPPED at virtual time " << seconds_text(virtual_time)
        << " (--until): invariants not checked\n";
  else
    out << "result      OK: " << invariants.size()
        << (invariants.size() == 1 ? " invariant holds" : " invariants hold") << "\n";
  return out.str();
}

std::string replay_command(const scenario& sc, std::uint64_t seed) {
  // A scenario built in code has no file: its name stands in for one.
  return "af sim run " + shell_word(sc.file.empty() ? sc.name : sc.file) + " --seed "
         + std::to_string(seed);
}

} // namespace af::sim
