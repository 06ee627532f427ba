// A test agent with a planted bug, for `af sim fuzz` to find (tests/apps/sim_e2e.sh,
// examples/sim/planted-bug.yaml): test.buggy_worker speaks sim.worker's task protocol
// ({"task", "value"} -> {"task", "result": 2 * value + 1}) but its "retry fast path" is off by
// one: a retried task (attempt >= 2) whose value is a multiple of 8 gets 2 * value + 2. Only
// seeds whose schedule loses an ask for such a task, and retries it to such a worker, show it.
#include <af/plan/agents.hpp>
#include <af/plan/plugin.hpp>
#include <af/v1/exec.pb.h>

#include <nlohmann/json.hpp>

namespace {

using nlohmann::json;

class buggy_worker : public af::agent_base<buggy_worker> {
public:
  static void define(af::handlers<buggy_worker>& h) {
    h.kind("test.buggy_worker").on(&buggy_worker::on_step);
  }

  af::expected<af::v1::StepOutput> on_step(af::context& ctx, const af::v1::StepRequest& req) {
    const json in = json::parse(req.input_json(), nullptr, false);
    if (!in.is_object() || !in.contains("value") || !in["value"].is_number_integer())
      return af::validation_error("test.buggy_worker: input: expected {\"task\", \"value\"}");
    const auto v = in["value"].get<std::int64_t>();
    const bool bug = req.attempt() >= 2 && v % 8 == 0; // the planted bug
    af::v1::StepOutput out;
    out.set_output_json(
        json{{"task", in.value("task", json{})}, {"result", 2 * v + (bug ? 2 : 1)}, {"by", ctx.name()}}
            .dump());
    return out;
  }
};

} // namespace

AF_PLUGIN_DECLARE_ABI();

extern "C" int agentflow_plugin_init(af_plugin_host* host, unsigned abi_version) {
  if (abi_version != AF_PLUGIN_ABI_VERSION) return 1;
  af::plan::agent_type t;
  t.factory = af::sup::agent_factory<buggy_worker>();
  t.description = "sim.worker's task protocol with a planted bug on retried tasks";
  if (auto ok = af::plan::plugin_agents(host).add("test.buggy_worker", std::move(t)); !ok) {
    af::plan::plugin_fail(host, ok.error().to_string().c_str());
    return 1;
  }
  return 0;
}
