#include "af/sup/supervisor.hpp"

#include "af/node.hpp"
#include "caf_glue.hpp"
#include "node_core.hpp"
#include "supervisor_actor.hpp"

#include <caf/scoped_actor.hpp>

#include <sstream>

namespace af::sup {

expected<supervisor_ref> supervisor_ref::find(node& n, std::string_view name) {
  auto r = n.lookup(name);
  if (!r) return r.error();
  if (n.core().registry.kind_of(name) != detail::k_supervisor_kind)
    return validation_error("'" + std::string{name} + "' is an agent, not a supervisor");
  return supervisor_ref{n, std::move(*r)};
}

expected<agent_ref> supervisor_ref::start_child(child_spec c, duration timeout) {
  const bool is_sup = c.is_supervisor();
  caf::scoped_actor self{*node_->core().sys};
  std::optional<expected<agent_ref>> out;
  self->request(caf::actor_cast<caf::actor>(ref_.ctrl()), timeout, detail::start_atom::value,
                detail::spec_ptr{std::make_shared<child_spec>(std::move(c))})
      .receive(
          [&](const detail::start_reply& r) {
            if (r.ref)
              out.emplace(*r.ref);
            else
              out.emplace(r.err ? *r.err : error{errc::internal, "start_child: empty reply"});
          },
          [&](const caf::error& err) { out.emplace(ask_error(err, ref_.name(), timeout)); });
  // Like OTP's start_link, return once a new supervisor has started its children: its subtree
  // answers only after every supervisor in it ran its init.
  if (*out && is_sup)
    if (auto t = supervisor_ref{*node_, **out}.tree(1, timeout); !t) return t.error();
  return std::move(*out);
}

expected<v1::ChildCommandResult> supervisor_ref::command(v1::ChildCommand::Op op, std::string id,
                                                         duration timeout) {
  v1::ChildCommand cmd;
  cmd.set_op(op);
  cmd.set_id(std::move(id));
  return node_->ask<v1::ChildCommandResult>(ref_, cmd, timeout);
}

expected<v1::ChildCommandResult> supervisor_ref::terminate_child(std::string id, duration timeout) {
  return command(v1::ChildCommand::TERMINATE, std::move(id), timeout);
}

expected<v1::ChildCommandResult> supervisor_ref::restart_child(std::string id, duration timeout) {
  return command(v1::ChildCommand::RESTART, std::move(id), timeout);
}

expected<v1::ChildCommandResult> supervisor_ref::delete_child(std::string id, duration timeout) {
  return command(v1::ChildCommand::DELETE, std::move(id), timeout);
}

expected<v1::WhichChildrenResult> supervisor_ref::which_children(duration timeout) {
  return node_->ask<v1::WhichChildrenResult>(ref_, v1::WhichChildrenRequest{}, timeout);
}

expected<v1::ChildCounts> supervisor_ref::count_children(duration timeout) {
  return node_->ask<v1::ChildCounts>(ref_, v1::CountChildrenRequest{}, timeout);
}

expected<v1::SupervisorTree> supervisor_ref::tree(std::uint32_t max_children, duration timeout) {
  v1::TreeRequest req;
  req.set_max_children(max_children);
  return node_->ask<v1::SupervisorTree>(ref_, req, timeout);
}

namespace {

void render(std::ostringstream& out, const v1::SupervisorTree& t, const std::string& indent) {
  const auto n = t.children_size();
  for (int i = 0; i < n; ++i) {
    const auto& c = t.children(i);
    const bool last = i == n - 1 && t.omitted() == 0;
    out << indent << (last ? "`-- " : "|-- ") << c.id();
    if (c.type() == "supervisor") {
      const auto& s = c.subtree();
      out << "  supervisor " << (s.strategy().empty() ? c.kind() : s.strategy());
      if (!s.name().empty())
        out << " (" << s.max_restarts() << " restarts in " << s.period_seconds() << " s)";
    } else {
      out << "  " << c.type() << " " << c.kind();
    }
    out << "  " << c.restart() << "  " << c.state() << "  restarts=" << c.restarts();
    if (!c.last_exit().empty()) out << "  last_exit=\"" << c.last_exit() << "\"";
    out << "\n";
    const std::string child_indent = indent + (last ? "    " : "|   ");
    if (c.has_subtree()) {
      if (!c.subtree().error().empty())
        out << child_indent << "(subtree unavailable: " << c.subtree().error() << ")\n";
      else if (c.type() == "agent") {
        // An agent that supervises its own children: show them under it.
        out << child_indent << "`-- " << c.subtree().name() << "  supervisor "
            << c.subtree().strategy() << "  restarts=" << c.subtree().restarts() << "\n";
        render(out, c.subtree(), child_indent + "    ");
      } else {
        render(out, c.subtree(), child_indent);
      }
    }
  }
  if (t.omitted() > 0) out << indent << "`-- ... " << t.omitted() << " more children\n";
}

} // namespace

std::string render_tree(const v1::SupervisorTree& t) {
  std::ostringstream out;
  out << t.name() << "  supervisor " << t.strategy() << " (" << t.max_restarts() << " restarts in "
      << t.period_seconds() << " s)  restarts=" << t.restarts() << "\n";
  render(out, t, "");
  return out.str();
}

} // namespace af::sup
