// Talking to a running supervisor from outside any agent (main, tests, the CLI): start, stop,
// restart and delete children, and read its children and subtree. Calls block the caller.
// Agents ask supervisors with the same af.v1 requests (ctx.ask) instead.
#pragma once

#include "af/agent.hpp"
#include "af/sup/spec.hpp"
#include "af/v1/supervision.pb.h"

#include <chrono>
#include <string>
#include <string_view>

namespace af {
class node;
} // namespace af

namespace af::sup {

class supervisor_ref {
public:
  supervisor_ref(node& n, agent_ref sup) : node_(&n), ref_(std::move(sup)) {}
  /// The supervisor registered as `name` (af.sup.root, af.sup.agents, a spec's name, ...).
  [[nodiscard]] static expected<supervisor_ref> find(node& n, std::string_view name);

  [[nodiscard]] const agent_ref& ref() const noexcept { return ref_; }
  [[nodiscard]] const std::string& name() const noexcept { return ref_.name(); }

  /// Starts `c` now; its id must be new in this supervisor. Returns the child's handle.
  expected<agent_ref> start_child(child_spec c, duration timeout = std::chrono::seconds(30));
  /// Stops a child (within its shutdown timeout, else kills it). A static child's spec stays
  /// (restart_child starts it again); a dynamic or temporary child is forgotten.
  expected<v1::ChildCommandResult> terminate_child(std::string id,
                                                   duration timeout = std::chrono::seconds(60));
  /// Starts a stopped static child again.
  expected<v1::ChildCommandResult> restart_child(std::string id,
                                                 duration timeout = std::chrono::seconds(30));
  /// Forgets a stopped static child.
  expected<v1::ChildCommandResult> delete_child(std::string id,
                                                duration timeout = std::chrono::seconds(30));
  expected<v1::WhichChildrenResult> which_children(duration timeout = std::chrono::seconds(10));
  expected<v1::ChildCounts> count_children(duration timeout = std::chrono::seconds(10));
  expected<v1::SupervisorTree> tree(std::uint32_t max_children = 0,
                                    duration timeout = std::chrono::seconds(10));

private:
  expected<v1::ChildCommandResult> command(v1::ChildCommand::Op op, std::string id,
                                           duration timeout);
  node* node_;
  agent_ref ref_;
};

/// `af node tree` as text: one line per supervisor and child, indented with tree guides.
[[nodiscard]] std::string render_tree(const v1::SupervisorTree& t);

} // namespace af::sup
