// Behavior-tree plans, event-driven: after every input the tree is ticked from the root over the
// nodes' remembered states. Actions (and conditions that call an agent or tool) are steps
// "NODE#run"; a retry decorator that restarts its child bumps the run of every node below it, so
// each attempt is a distinct step. A timeout decorator races its child against a wait step
// "NODE~timer#run".
#include "plan/engine.hpp"

#include <unordered_map>

namespace af::plan {

namespace {

enum class bt : unsigned char { idle, running, success, failure };

struct bt_slot {
  const v1::BtNode* node = nullptr;
  std::vector<std::size_t> children;
  bt state = bt::idle;
  std::uint32_t run = 0;
  std::size_t cursor = 0;
  std::uint32_t tries = 0;
  std::string step;  ///< the leaf's step in flight, or the timeout's timer step
  bool timer_fired = false;
};

class bt_engine final : public engine {
public:
  bt_engine(std::shared_ptr<const v1::ExecutionStarted> s, error& err) : engine(std::move(s)) {
    if (ir().root().type() == v1::BT_TYPE_UNSPECIFIED) {
      err = validation_error("plan '" + ir().name() + "': the behavior tree has no root");
      ok_ = false;
      return;
    }
    add(ir().root());
  }
  bool ok_ = true;

private:
  std::size_t add(const v1::BtNode& n) {
    const std::size_t i = slots_.size();
    slots_.emplace_back();
    slots_[i].node = &n;
    for (const auto& c : n.children()) {
      const std::size_t ci = add(c);
      slots_[i].children.push_back(ci);
    }
    return i;
  }

  void plan(std::vector<v1::ExecEvent>& out) override {
    const bt r = tick(out, 0);
    if (finished()) return;
    if (r == bt::success) {
      if (!ir().outputs_json().empty()) {
        auto tmpl = nlohmann::json::parse(ir().outputs_json(), nullptr, false);
        auto o = render(tmpl, scope());
        if (!o) {
          fail_execution(out, validation_error("plan outputs: " + o.error().message()), {});
          return;
        }
        complete(out, *o);
        return;
      }
      complete(out, {{"status", "success"}});
    } else if (r == bt::failure) {
      fail_execution(out,
                     error{errc::internal, "the behavior tree's root '" + ir().root().id()
                                               + "' failed" + (why_.empty() ? "" : ": " + why_)},
                     ir().root().id());
    }
  }

  bt tick(std::vector<v1::ExecEvent>& out, std::size_t i) {
    auto& s = slots_[i];
    if (s.state == bt::success || s.state == bt::failure) return s.state;
    if (finished()) return bt::running;
    const v1::BtNode& n = *s.node;
    switch (n.type()) {
    case v1::BT_CONDITION:
      if (n.call().kind() == v1::STEP_KIND_UNSPECIFIED) {
        std::string_view e = n.expr();
        if (e.size() > 3 && e.substr(0, 2) == "${" && e.back() == '}')
          e = e.substr(2, e.size() - 3);
        auto v = eval(e, scope());
        if (!v) {
          fail_execution(out,
                         validation_error("condition '" + n.id() + "': " + v.error().message()),
                         n.id());
          return bt::running;
        }
        return s.state = truthy(*v) ? bt::success : bt::failure;
      }
      [[fallthrough]];
    case v1::BT_ACTION: {
      if (s.state == bt::running) return bt::running;
      s.state = bt::running;
      s.step = n.id() + "#" + std::to_string(s.run);
      by_step_[s.step] = i;
      auto input = render_input(n.call(), s.step, nullptr);
      if (!input) {
        fail_step(out, s.step, n.call(), input.error(), n.id());
        return s.state;
      }
      schedule(out, s.step, 1, n.call(), *input, n.id());
      return bt::running;
    }
    case v1::BT_SEQUENCE:
    case v1::BT_SELECTOR: {
      s.state = bt::running;
      const bt stop_on = n.type() == v1::BT_SEQUENCE ? bt::failure : bt::success;
      while (s.cursor < s.children.size()) {
        const bt c = tick(out, s.children[s.cursor]);
        if (c == bt::running) return bt::running;
        if (c == stop_on) return s.state = c;
        ++s.cursor;
      }
      return s.state = (n.type() == v1::BT_SEQUENCE ? bt::success : bt::failure);
    }
    case v1::BT_PARALLEL: {
      s.state = bt::running;
      const std::size_t total = s.children.size();
      const std::size_t need = n.success_threshold() > 0 ? n.success_threshold() : total;
      std::size_t ok = 0, bad = 0;
      for (auto c : s.children) {
        const bt r = tick(out, c);
        if (r == bt::success) ++ok;
        if (r == bt::failure) ++bad;
        if (finished()) return bt::running;
      }
      if (ok >= need || bad > total - need) {
        for (auto c : s.children)
          stop(c);
        return s.state = ok >= need ? bt::success : bt::failure;
      }
      return bt::running;
    }
    case v1::BT_INVERTER: {
      s.state = bt::running;
      const bt c = tick(out, s.children.at(0));
      if (c == bt::running) return c;
      return s.state = c == bt::success ? bt::failure : bt::success;
    }
    case v1::BT_RETRY: {
      s.state = bt::running;
      const std::uint32_t times = n.times() > 0 ? n.times() : 1;
      for (;;) {
        const bt c = tick(out, s.children.at(0));
        if (c != bt::failure || finished()) {
          if (c == bt::success) s.state = c;
          return c;
        }
        if (++s.tries >= times) return s.state = bt::failure;
        reset(s.children.at(0));
      }
    }
    case v1::BT_TIMEOUT: {
      if (s.state == bt::idle) {
        s.state = bt::running;
        s.step = n.id() + "~timer#" + std::to_string(s.run);
        by_step_[s.step] = i;
        v1::Call timer;
        timer.set_kind(v1::STEP_WAIT);
        timer.set_wait_ms(n.after_ms());
        schedule(out, s.step, 1, timer, nlohmann::json::object(), n.id());
      }
      if (s.timer_fired) {
        stop(s.children.at(0));
        why_ = "timeout '" + n.id() + "' expired";
        return s.state = bt::failure;
      }
      const bt c = tick(out, s.children.at(0));
      if (c != bt::running) {
        abandon(s.step);
        s.state = c;
      }
      return c;
    }
    default:
      fail_execution(out, validation_error("node '" + n.id() + "' has no type"), n.id());
      return bt::running;
    }
  }

  /// Abandons every step still running under node i (a finished parallel, an expired timeout).
  void stop(std::size_t i) {
    auto& s = slots_[i];
    if (s.state == bt::running && !s.step.empty()) abandon(s.step);
    for (auto c : s.children)
      stop(c);
  }

  /// Makes the subtree under i run again with fresh step ids (a retry decorator's next try).
  void reset(std::size_t i) {
    auto& s = slots_[i];
    if (s.state == bt::running && !s.step.empty()) abandon(s.step);
    s.state = bt::idle;
    ++s.run;
    s.cursor = 0;
    s.tries = 0;
    s.step.clear();
    s.timer_fired = false;
    for (auto c : s.children)
      reset(c);
  }

  void on_success(const v1::StepScheduled& st, const nlohmann::json& output) override {
    auto it = by_step_.find(st.step_id());
    if (it == by_step_.end()) return;
    auto& s = slots_[it->second];
    by_step_.erase(it);
    if (s.node->type() == v1::BT_TIMEOUT) {
      s.timer_fired = true;
      return;
    }
    set_output(s.node->id(), output); // ${steps.NODE.output}: the node's latest output
    if (s.node->type() == v1::BT_CONDITION)
      s.state = truthy(output) ? bt::success : bt::failure;
    else
      s.state = bt::success;
  }

  void on_failure(const v1::StepScheduled& st, const v1::StepFailed& f) override {
    auto it = by_step_.find(st.step_id());
    if (it == by_step_.end()) return;
    auto& s = slots_[it->second];
    by_step_.erase(it);
    if (s.node->type() == v1::BT_TIMEOUT) {
      s.timer_fired = true;
      return;
    }
    s.state = bt::failure;
    why_ = "node '" + s.node->id() + "' failed: " + f.error_kind() + ": " + f.message();
  }

  std::vector<bt_slot> slots_;
  std::unordered_map<std::string, std::size_t> by_step_;
  std::string why_;
};

} // namespace

std::unique_ptr<engine> make_bt_engine(std::shared_ptr<const v1::ExecutionStarted> s,
                                         error& err) {
  auto e = std::make_unique<bt_engine>(std::move(s), err);
  if (!e->ok_) return nullptr;
  return e;
}

} // namespace af::plan
