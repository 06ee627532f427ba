// DAG plans: steps run when every step they depend on completed (Kahn order from the compiler),
// `for_each` fans a step out into branches "id[i]" and joins them (a barrier), a failed step's
// dependents are skipped, and the execution ends when every step has.
#include "plan/engine.hpp"

#include <optional>
#include <string_view>
#include <unordered_map>

namespace af::plan {

namespace {

enum class node_state : unsigned char { waiting, running, done, failed, skipped };

struct dag_node {
  const v1::DagStep* step = nullptr;
  // Ranges of dag_engine::links_ (two vectors per node cost two allocations each on a
  // 10,000-step plan's every execution, and as many frees).
  std::size_t deps_begin = 0; ///< the steps this one is `after`, in the plan's order
  std::size_t deps_end = 0;
  std::size_t dependents_begin = 0; ///< the steps `after` this one, in plan order
  std::size_t dependents_end = 0;
  std::size_t remaining = 0; ///< deps not yet ended
  node_state state = node_state::waiting;
  // fan-out
  std::size_t branches = 0;
  std::size_t branches_ended = 0;
  bool branch_failed = false;
  nlohmann::json branch_outputs;
};

class dag_engine final : public engine {
public:
  dag_engine(std::shared_ptr<const v1::ExecutionStarted> s, error& err) : engine(std::move(s)) {
    const auto& steps = ir().steps();
    const auto n = static_cast<std::size_t>(steps.size());
    nodes_.resize(n);
    index_.reserve(n);
    std::size_t edges = 0;
    for (int i = 0; i < steps.size(); ++i) {
      nodes_[static_cast<std::size_t>(i)].step = &steps[i];
      index_.emplace(steps[i].id(), static_cast<std::size_t>(i));
      edges += static_cast<std::size_t>(steps[i].after_size());
    }
    // links_: every node's deps, then every node's dependents (counted first, then filled in
    // the order the steps come in, as pushing to a vector per node did).
    links_.resize(2 * edges);
    std::size_t at = 0;
    for (std::size_t i = 0; i < n; ++i) {
      nodes_[i].deps_begin = at;
      for (const auto& a : nodes_[i].step->after()) {
        auto it = index_.find(a);
        if (it == index_.end()) {
          err = validation_error("plan '" + ir().name() + "': step '" + nodes_[i].step->id()
                                 + "' depends on unknown step '" + a + "'");
          ok_ = false;
          return;
        }
        links_[at++] = it->second;
        ++nodes_[it->second].dependents_end; // a count for now
      }
      nodes_[i].deps_end = at;
      nodes_[i].remaining = nodes_[i].deps_end - nodes_[i].deps_begin;
      if (nodes_[i].remaining == 0) ready_.push_back(i);
    }
    for (auto& node : nodes_) {
      node.dependents_begin = at;
      at += node.dependents_end;
      node.dependents_end = node.dependents_begin; // the fill position below
    }
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = nodes_[i].deps_begin; k < nodes_[i].deps_end; ++k)
        links_[nodes_[links_[k]].dependents_end++] = i;
  }
  bool ok_ = true;

private:
  void plan(std::vector<v1::ExecEvent>& out) override {
    while (!ready_.empty() && !strict_failed()) {
      const std::size_t i = ready_.front();
      ready_.pop_front();
      start(out, i);
    }
    if (strict_failed()) return; // decide() fails the execution
    if (ended_ == nodes_.size()) finish(out);
  }

  void start(std::vector<v1::ExecEvent>& out, std::size_t i) {
    auto& n = nodes_[i];
    for (std::size_t k = n.deps_begin; k < n.deps_end; ++k)
      if (const auto d = links_[k]; nodes_[d].state != node_state::done) {
        n.state = node_state::skipped;
        view(n.step->id(), "skipped", 0, {}, "step '" + nodes_[d].step->id() + "' did not complete");
        end(i);
        return;
      }
    n.state = node_state::running;
    if (n.step->for_each().empty()) {
      // Rendered once (a retry reuses the scheduled input): its parsed template is not kept.
      auto input = render_input(n.step->call(), n.step->id(), nullptr, false);
      if (!input) {
        fail_step(out, n.step->id(), n.step->call(), input.error(), {});
        return;
      }
      schedule(out, n.step->id(), 1, n.step->call(), *input, {});
      return;
    }
    auto list = eval_for_each(*n.step);
    if (!list) {
      fail_step(out, n.step->id(), n.step->call(), list.error(), {});
      return;
    }
    n.branches = list->size();
    n.branch_outputs = nlohmann::json::array();
    if (n.branches == 0) {
      node_done(i, nlohmann::json::array());
      return;
    }
    for (std::size_t b = 0; b < n.branches; ++b)
      n.branch_outputs.push_back(nullptr);
    for (std::size_t b = 0; b < n.branches; ++b) {
      const std::string id = n.step->id() + "[" + std::to_string(b) + "]";
      const auto& item = (*list)[b];
      auto input = render_input(n.step->call(), id, &item);
      if (!input) {
        fail_step(out, id, n.step->call(), input.error(), n.step->id());
        continue;
      }
      schedule(out, id, 1, n.step->call(), *input, n.step->id(), &item);
    }
  }

  expected<nlohmann::json> eval_for_each(const v1::DagStep& st) const {
    std::string_view e = st.for_each();
    if (e.size() > 3 && e.substr(0, 2) == "${" && e.back() == '}') e = e.substr(2, e.size() - 3);
    auto v = eval(e, scope());
    if (!v)
      return validation_error("step '" + st.id() + "': for_each: " + v.error().message());
    if (!v->is_array())
      return validation_error("step '" + st.id() + "': for_each '" + st.for_each()
                              + "' is a " + v->type_name() + ", expected a list");
    return v;
  }

  void on_success(const v1::StepScheduled& s, const nlohmann::json& output) override {
    if (s.parent_step().empty()) {
      // The base has set ${steps.ID.output} to `output` already.
      const std::size_t i = index_.at(s.step_id());
      nodes_[i].state = node_state::done;
      end(i);
      return;
    }
    const std::size_t i = index_.at(s.parent_step());
    auto& n = nodes_[i];
    const auto b = branch_of(s.step_id());
    n.branch_outputs[b] = output;
    branch_ended(i);
  }

  void on_failure(const v1::StepScheduled& s, const v1::StepFailed& f) override {
    if (first_failure_.empty())
      first_failure_ = "step '" + s.step_id() + "' failed: " + f.error_kind() + ": " + f.message();
    if (s.parent_step().empty()) {
      const std::size_t i = index_.at(s.step_id());
      nodes_[i].state = node_state::failed;
      end(i);
      return;
    }
    const std::size_t i = index_.at(s.parent_step());
    nodes_[i].branch_failed = true;
    branch_ended(i);
  }

  static std::size_t branch_of(const std::string& id) {
    const auto open = id.rfind('[');
    return static_cast<std::size_t>(std::stoul(id.substr(open + 1)));
  }

  void branch_ended(std::size_t i) {
    auto& n = nodes_[i];
    if (++n.branches_ended < n.branches) return;
    if (n.branch_failed) {
      n.state = node_state::failed;
      view(n.step->id(), "failed", 1, {}, "a branch failed");
      end(i);
      return;
    }
    view(n.step->id(), "completed", 1, n.branch_outputs.dump());
    node_done(i, n.branch_outputs);
  }

  void node_done(std::size_t i, const nlohmann::json& output) {
    auto& n = nodes_[i];
    n.state = node_state::done;
    set_output(n.step->id(), output);
    end(i);
  }

  void end(std::size_t i) {
    ++ended_;
    for (std::size_t k = nodes_[i].dependents_begin; k < nodes_[i].dependents_end; ++k)
      if (const auto d = links_[k]; --nodes_[d].remaining == 0) ready_.push_back(d);
  }

  void finish(std::vector<v1::ExecEvent>& out) {
    if (!first_failure_.empty()) {
      fail_execution(out, error{errc::internal, first_failure_}, {});
      return;
    }
    if (!ir().outputs_json().empty()) {
      auto tmpl = nlohmann::json::parse(ir().outputs_json(), nullptr, false);
      auto r = render(tmpl, scope());
      if (!r) {
        fail_execution(out, validation_error("plan outputs: " + r.error().message()), {});
        return;
      }
      complete(out, *r);
      return;
    }
    // By default the outputs are those of the final steps (the ones nothing depends on).
    nlohmann::json o = nlohmann::json::object();
    for (const auto& n : nodes_)
      if (n.dependents_begin == n.dependents_end && n.state == node_state::done) o[n.step->id()] = *output_of(n.step->id());
    complete(out, o);
  }

  std::vector<dag_node> nodes_;
  std::vector<std::size_t> links_; ///< the ranges of dag_node
  /// Step ids (strings of the plan, which the engine keeps) to nodes.
  std::unordered_map<std::string_view, std::size_t> index_;
  std::deque<std::size_t> ready_;
  std::size_t ended_ = 0;
  std::string first_failure_;
};

} // namespace

std::unique_ptr<engine> make_dag_engine(std::shared_ptr<const v1::ExecutionStarted> s,
                                         error& err) {
  auto e = std::make_unique<dag_engine>(std::move(s), err);
  if (!e->ok_) return nullptr;
  return e;
}

} // namespace af::plan
