// The invoker agent of an in-process tool: answers af.v1.StepRequest by calling the tool's
// function. A tool's error is the reply; a throwing tool is an `internal` error reply naming the
// tool, and the invoker stays up (the exception never crosses into the actor runtime).
#include "af/tool/registry.hpp"

#include "af/metrics.hpp"
#include "af/v1/exec.pb.h"
#include "plan/step_io.hpp"

#include <exception>

namespace af::tool {

namespace {

class invoker : public agent_base<invoker> {
public:
  invoker(std::string name, tool t) : name_(std::move(name)), tool_(std::move(t)) {}

  static void define(handlers<invoker>& h) {
    h.kind("tool.invoker").on(&invoker::on_step).on(&invoker::on_cancel);
  }

  void on_start(context& ctx) override {
    for (auto [outcome, slot] :
         {std::pair{"ok", &ok_}, std::pair{"error", &failed_}, std::pair{"exception", &threw_}})
      if (auto c = ctx.metrics().counter("af_tool_calls_total", "Tool calls by tool and outcome",
                                         {{"tool_id", name_}, {"outcome", outcome}}))
        *slot = *c;
  }

  expected<v1::StepOutput> on_step(context& ctx, const v1::StepRequest& req) {
    const std::string who = "tool '" + name_ + "'";
    auto in = plan::detail::parse_input(who, req.input_json());
    if (!in) {
      failed_.inc();
      return std::move(in).error();
    }
    call_info call{req.execution_id(), req.step_id(), std::max<std::uint32_t>(req.attempt(), 1),
                   req.idempotency_key(), ctx.tenant()};
    std::string what;
    try {
      auto r = tool_.fn(*in, call);
      if (!r) {
        failed_.inc();
        return std::move(r).error();
      }
      ok_.inc();
      return plan::detail::make_output(*r);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "an exception that is not a std::exception";
    }
    threw_.inc();
    ctx.log().error("tool_threw", what, {{"tool_id", name_}, {"step_id", req.step_id()}});
    return internal_error(who + " threw: " + what);
  }

  void on_cancel(context&, const v1::StepCancel&) {} // calls are synchronous: nothing in flight

private:
  std::string name_;
  tool tool_;
  counter_handle ok_, failed_, threw_;
};

} // namespace

std::unique_ptr<agent> make_invoker(std::string name, tool t) {
  return std::make_unique<invoker>(std::move(name), std::move(t));
}

} // namespace af::tool
