// The invariants a scenario names (docs/simulation.md, "Invariants"), checked at the end of a
// run against the oracle's books, the nodes' stores and the live actors.
#include "af/node.hpp"
#include "af/plan/executor.hpp"
#include "af/v1/exec.pb.h"
#include "cluster_book.hpp"
#include "exec_owner_book.hpp"
#include "raft_book.hpp"
#include "sim_agents.hpp"
#include "virtual_agents.hpp"
#include "world.hpp"

#include <caf/actor_registry.hpp>

#include <algorithm>
#include <map>

namespace af::sim::detail {

namespace {

invariant_result tasks_answered_once(const sim_state& st, duration now) {
  invariant_result r{"tasks_answered_once", true, {}, now};
  const auto& b = st.tasks;
  std::uint64_t pending = 0, twice = 0, wrong = 0;
  std::string first_pending;
  for (const auto& [id, t] : b.tasks) {
    const auto ends = t.answers + t.failures;
    if (ends == 0) {
      ++pending;
      if (first_pending.empty() || id < first_pending) first_pending = id;
    }
    if (ends > 1) ++twice;
    if (t.wrong) ++wrong;
  }
  r.detail = std::to_string(b.tasks.size()) + " tasks: " + std::to_string(b.answered)
             + " answered, " + std::to_string(b.failed) + " reported failed";
  if (!b.first_problem.empty()) {
    r.ok = false;
    r.detail += "; " + b.first_problem + " (" + std::to_string(wrong) + " wrong, "
                + std::to_string(twice) + " ended twice)";
    r.at = b.first_problem_at;
  } else if (pending > 0) {
    r.ok = false;
    r.detail += "; " + std::to_string(pending) + " never answered nor failed (first: "
                + first_pending + ")";
  }
  return r;
}

/// Every saga workflow ended all-completed (each std.ledger action once, no compensation row) or
/// all-compensated (each std.ledger action at most once, and each one applied undone exactly
/// once by its std.ledger compensation).
template <class FindNode>
invariant_result sagas_settled(const sim_state& st, FindNode find_node, duration now) {
  invariant_result r{"sagas_settled", true, {}, now};
  std::map<std::pair<std::string, std::string>, std::size_t> rows;
  for (const auto& [key, row] : st.ledger->rows)
    ++rows[{row.execution_id, row.step_id}];
  auto count = [&](const std::string& id, const std::string& step) {
    auto it = rows.find({id, step});
    return it == rows.end() ? std::size_t{0} : it->second;
  };
  std::size_t sagas = 0, completed = 0, compensated = 0, undone = 0;
  std::string first;
  auto problem = [&](std::string what) {
    r.ok = false;
    if (first.empty()) first = std::move(what);
  };
  for (const auto& [id, e] : st.workflows.executions) {
    if (!e.saga) continue;
    ++sagas;
    auto events = find_node(e.node)->disk()->read(plan::stream_of(id), 1, 1'000'000);
    const bool any = events && !events->empty();
    const std::string last = any ? events->back().type : std::string{};
    if (last == v1::ExecutionCompleted::descriptor()->full_name()) {
      ++completed;
      for (const auto& s : e.ledger_steps) {
        if (count(id, s) != 1)
          problem(id + "/" + s + " applied " + std::to_string(count(id, s)) + " times (completed)");
        if (count(id, s + ".compensate") != 0)
          problem(id + "/" + s + " compensated in a saga that completed");
      }
      continue;
    }
    v1::ExecutionFailed f;
    if (last != v1::ExecutionFailed::descriptor()->full_name()
        || !f.ParseFromString(events->back().payload) || !f.compensated()) {
      problem(id + " on " + e.node + " did not settle: "
              + (last.empty() ? std::string{"never started"} : "last event " + last));
      continue;
    }
    ++compensated;
    for (const auto& s : e.ledger_steps) {
      const auto applied = count(id, s);
      if (applied > 1) problem(id + "/" + s + " applied " + std::to_string(applied) + " times");
      const bool by_ledger =
          std::find(e.ledger_compensations.begin(), e.ledger_compensations.end(), s)
          != e.ledger_compensations.end();
      const auto back = count(id, s + ".compensate");
      undone += back;
      if (by_ledger && back != applied)
        problem(id + "/" + s + " applied " + std::to_string(applied) + " times, compensated "
                + std::to_string(back) + " times");
    }
  }
  r.detail = std::to_string(sagas) + " sagas: " + std::to_string(completed) + " completed, "
             + std::to_string(compensated) + " compensated (" + std::to_string(undone)
             + " ledger rows undone)" + (first.empty() ? "" : "; first problem: " + first);
  return r;
}

} // namespace

std::vector<invariant_result> world::check_invariants(bool complete) {
  std::vector<invariant_result> out;
  const auto now = elapsed();
  for (const auto& name : sc_.invariants) {
    if (!complete) {
      out.push_back({name, true, "not checked: the run stopped at --until", now, false});
      continue;
    }
    if (name == "virtual_exactly_once") {
      if (virtual_)
        out.push_back(virtual_exactly_once(*virtual_, now));
      else
        out.push_back({name, false, "the scenario has no virtual_agents section", now});
      continue;
    }
    if (name == "linearizable") {
      if (linearizable_)
        out.push_back(*linearizable_);
      else
        out.push_back({name, false, "the scenario has no kv_clients section", now});
      continue;
    }
    if (name == "tasks_answered_once") {
      out.push_back(tasks_answered_once(*state_, now));
    } else if (name == "tree_recovers") {
      invariant_result r{name, true, {}, now};
      std::size_t missing = 0;
      std::string first;
      for (auto& n : nodes_) {
        if (!n->up()) {
          ++missing;
          if (first.empty()) first = "node " + n->name() + " is down";
          continue;
        }
        auto& reg = n->core()->registry;
        for (std::string_view must : {k_root_supervisor, k_system_supervisor, k_agents_supervisor})
          if (!reg.find(must)) {
            ++missing;
            if (first.empty()) first = n->name() + "/" + std::string{must} + " is not running";
          }
        for (const auto& a : n->population_names())
          if (!reg.find(a)) {
            ++missing;
            if (first.empty()) first = n->name() + "/" + a + " is not running";
          }
      }
      r.ok = missing == 0;
      r.detail = r.ok ? "every node up with its whole tree and population"
                      : std::to_string(missing) + " missing; first: " + first;
      out.push_back(std::move(r));
    } else if (name == "no_actor_leak") {
      invariant_result r{name, true, {}, now};
      std::size_t registered = 0, zombies = 0;
      for (auto& n : nodes_) {
        zombies += n->zombies();
        if (n->up()) registered += n->core()->registry.size();
      }
      // Besides the nodes' registered actors, only the network and the director run.
      const auto running = sys_->registry().running();
      const auto expected_running = registered + 2;
      r.ok = zombies == 0 && running == expected_running;
      r.detail = std::to_string(running) + " actors running, " + std::to_string(registered)
                 + " registered on live nodes (+2 simulator actors), "
                 + std::to_string(zombies) + " left from crashed incarnations";
      out.push_back(std::move(r));
    } else if (name == "executions_complete") {
      invariant_result r{name, true, {}, now};
      std::size_t done = 0;
      std::string first;
      for (const auto& [id, e] : state_->workflows.executions) {
        auto* n = find_node(e.node);
        const auto& disk = shared_disk_ ? shared_disk_ : n->disk();
        auto events = disk->read(plan::stream_of(id), 1, 1'000'000);
        std::string last = events && !events->empty() ? events->back().type : std::string{};
        if (last == v1::ExecutionCompleted::descriptor()->full_name()) {
          ++done;
        } else if (first.empty()) {
          first = id + " on " + e.node + ": "
                  + (last.empty() ? std::string{"never started"} : "last event " + last);
        }
      }
      r.ok = done == state_->workflows.executions.size();
      r.detail = std::to_string(done) + " of " + std::to_string(state_->workflows.executions.size())
                 + " executions completed" + (r.ok ? "" : "; first not: " + first);
      out.push_back(std::move(r));
    } else if (name == "ledger_exactly_once") {
      invariant_result r{name, true, {}, now};
      std::map<std::pair<std::string, std::string>, std::size_t> rows;
      for (const auto& [key, row] : state_->ledger->rows)
        ++rows[{row.execution_id, row.step_id}];
      std::size_t expected_rows = 0, bad = 0;
      std::string first;
      for (const auto& [id, e] : state_->workflows.executions)
        for (const auto& step : e.ledger_steps) {
          ++expected_rows;
          auto it = rows.find({id, step});
          const auto n = it == rows.end() ? 0 : it->second;
          if (n != 1) {
            ++bad;
            if (first.empty())
              first = id + "/" + step + " applied " + std::to_string(n) + " times";
          }
        }
      r.ok = bad == 0 && rows.size() == expected_rows;
      r.detail = std::to_string(state_->ledger->rows.size()) + " ledger rows for "
                 + std::to_string(expected_rows) + " ledger steps, "
                 + std::to_string(state_->ledger->duplicates) + " duplicate applications refused"
                 + (bad ? "; first wrong: " + first : "");
      out.push_back(std::move(r));
    } else if (name == "sagas_settled") {
      out.push_back(sagas_settled(
          *state_, [this](const std::string& n) { return find_node(n); }, now));
    } else if (name == "exec_single_owner") {
      if (exec_owners_)
        out.push_back(exec_owners_->single_owner(now));
      else
        out.push_back({name, false, "the scenario has no ownership: section", now});
    } else if (name == "members_agree" || name == "crashed_members_dead") {
      if (!cluster_) {
        out.push_back({name, false, "the scenario has no cluster: section", now});
      } else {
        out.push_back(name == "members_agree" ? cluster_->members_agree(now)
                                              : cluster_->crashed_members_dead(now));
      }
    } else {
      out.push_back({name, false, "unknown invariant", now});
    }
  }
  // Raft's safety properties are checked on every run of a scenario with `raft:` (their
  // violations are recorded as they happen, so a run stopped by --until reports them too).
  if (raft_)
    for (auto& r : raft_->invariants(now))
      out.push_back(std::move(r));
  return out;
}

} // namespace af::sim::detail
