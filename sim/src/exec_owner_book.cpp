// The simulator's execution-ownership book (exec_owner_book.hpp).
#include "exec_owner_book.hpp"

#include "af/metrics.hpp"
#include "world.hpp"

#include <sstream>

namespace af::sim::detail {

namespace {

std::uint64_t metric_sum(const af::metrics& m, std::string_view family) {
  std::istringstream text{m.serialize_text()};
  std::uint64_t sum = 0;
  for (std::string line; std::getline(text, line);)
    if (line.starts_with(family) && line.size() > family.size()
        && (line[family.size()] == '{' || line[family.size()] == ' '))
      sum += static_cast<std::uint64_t>(std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr));
  return sum;
}

} // namespace

void exec_owner_book::running(const std::string& node, const std::string& execution_id) {
  // An executor of a crashed incarnation that had not run yet may start before its kill is
  // handled: it never acts (the kill comes next), so it is no owner.
  const auto* n = world_.find_node(node);
  if (n == nullptr || !n->up()) return;
  ++starts_;
  auto& nodes = active_[execution_id];
  nodes.insert(node);
  max_owners_ = std::max<std::uint64_t>(max_owners_, nodes.size());
  if (nodes.size() < 2) return;
  ++overlaps_;
  if (!first_.empty()) return;
  first_at_ = world_.elapsed();
  std::string who;
  for (const auto& o : nodes)
    who += (who.empty() ? "" : ", ") + o;
  first_ = "execution " + execution_id + " running on " + who;
  world_.note("exec_single_owner violated: " + first_);
}

void exec_owner_book::stopped(const std::string& node, const std::string& execution_id) {
  auto it = active_.find(execution_id);
  if (it == active_.end()) return;
  it->second.erase(node);
  if (it->second.empty()) active_.erase(it);
}

void exec_owner_book::node_down(const std::string& node) {
  for (auto it = active_.begin(); it != active_.end();) {
    it->second.erase(node);
    it = it->second.empty() ? active_.erase(it) : std::next(it);
  }
}

invariant_result exec_owner_book::single_owner(duration now) const {
  invariant_result r{"exec_single_owner", overlaps_ == 0, {}, overlaps_ == 0 ? now : first_at_};
  const auto f = figures();
  r.detail = std::to_string(starts_) + " executor starts, " + std::to_string(f.takeovers)
             + " takeovers, " + std::to_string(f.lease_expirations)
             + " executors stopped at their lease deadline, " + std::to_string(f.fenced)
             + " fenced";
  if (overlaps_ > 0)
    r.detail += "; " + std::to_string(overlaps_) + " starts while another node ran the "
                + "execution; first: " + first_;
  return r;
}

ownership_figures exec_owner_book::figures() const {
  ownership_figures f;
  f.executor_starts = starts_;
  f.max_owners = max_owners_;
  f.overlaps = overlaps_;
  for (const auto& name : world_.scen().nodes) {
    const auto* n = world_.find_node(name);
    if (n == nullptr) continue;
    const auto& m = n->metrics();
    f.takeovers += metric_sum(m, "af_exec_takeovers_total");
    f.lease_expirations += metric_sum(m, "af_exec_lease_expirations_total");
    f.leases_lost += metric_sum(m, "af_exec_leases_lost_total");
    f.fenced += metric_sum(m, "af_exec_fenced_total");
  }
  return f;
}

} // namespace af::sim::detail
