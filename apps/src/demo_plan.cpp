// The agents and tools of the workflow demo (`make run`, examples/plans/primes.yaml): demo.split
// cuts [0, limit) into ranges, 1,000 demo.primes agents count the primes of one range each, and
// demo.sum adds the counts up and checks the total against an independent sieve.
#include "demo_plan.hpp"

#include "af/v1/exec.pb.h"
#include "demo.hpp"

#include <nlohmann/json.hpp>

namespace af::demo {

namespace {

/// demo.primes: counts the primes in [from, to) by trial division.
class primes_agent : public agent_base<primes_agent> {
public:
  static void define(handlers<primes_agent>& h) {
    h.kind("demo.primes").on(&primes_agent::on_step).on(&primes_agent::on_cancel);
  }
  expected<v1::StepOutput> on_step(context&, const v1::StepRequest& req) {
    auto in = nlohmann::json::parse(req.input_json(), nullptr, false);
    if (in.is_discarded() || !in.is_object() || !in.contains("from") || !in.contains("to")
        || !in["from"].is_number_unsigned() || !in["to"].is_number_unsigned())
      return validation_error("demo.primes: input: expected {from: N, to: N} (non-negative "
                              "integers), got " + req.input_json());
    const auto from = in["from"].get<std::uint64_t>();
    const auto to = in["to"].get<std::uint64_t>();
    if (to < from) return validation_error("demo.primes: input: to < from");
    v1::StepOutput out;
    out.set_output_json(
        nlohmann::json{{"from", from}, {"to", to}, {"primes", count_primes_in(from, to)}}.dump());
    return out;
  }
  void on_cancel(context&, const v1::StepCancel&) {}
};

expected<std::uint64_t> field(const nlohmann::json& in, const char* tool, const char* name) {
  if (!in.is_object() || !in.contains(name) || !in[name].is_number_unsigned())
    return validation_error(std::string{tool} + ": input." + name
                            + ": expected a non-negative integer");
  return in[name].get<std::uint64_t>();
}

} // namespace

status add_demo_plan_agents(plan::agent_types& agents, tool::registry& tools) {
  plan::agent_type t;
  t.factory = sup::agent_factory<primes_agent>();
  t.instances = 1000;
  t.description = "counts the primes in [from, to) (the workflow demo's 1,000 workers)";
  if (auto st = agents.add("demo.primes", std::move(t)); !st) return st;

  if (auto st = tools.add(
          "demo.split",
          [](const nlohmann::json& in, const tool::call_info&) -> expected<nlohmann::json> {
            auto limit = field(in, "demo.split", "limit");
            if (!limit) return limit.error();
            auto parts = field(in, "demo.split", "parts");
            if (!parts) return parts.error();
            if (*parts == 0 || *parts > 100000)
              return validation_error("demo.split: input.parts: expected 1..100000");
            nlohmann::json ranges = nlohmann::json::array();
            for (std::uint64_t i = 0; i < *parts; ++i)
              ranges.push_back({{"from", *limit * i / *parts}, {"to", *limit * (i + 1) / *parts}});
            return nlohmann::json{{"ranges", std::move(ranges)}};
          },
          "cuts [0, limit) into `parts` ranges");
      !st)
    return st;

  return tools.add(
      "demo.sum",
      [](const nlohmann::json& in, const tool::call_info&) -> expected<nlohmann::json> {
        auto limit = field(in, "demo.sum", "limit");
        if (!limit) return limit.error();
        if (!in.contains("counts") || !in["counts"].is_array())
          return validation_error("demo.sum: input.counts: expected the list of range counts");
        std::uint64_t sum = 0;
        for (const auto& c : in["counts"])
          sum += c.value("primes", std::uint64_t{0});
        const auto sieve = count_primes_below(std::max<std::uint64_t>(*limit, 2));
        if (sum != sieve)
          return error{errc::internal, "demo.sum: the agents counted " + std::to_string(sum)
                                           + " primes, the sieve " + std::to_string(sieve)};
        return nlohmann::json{{"primes", sum}, {"sieve", sieve}, {"match", true},
                              {"ranges", in["counts"].size()}};
      },
      "adds the range counts up and checks them against a sieve");
}

} // namespace af::demo
