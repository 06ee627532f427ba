// Test support for the step protocol: a quiet node, StepRequests, asking an agent for a step and
// reading a metric from the node's exposition.
#pragma once

#include "af/node.hpp"
#include "af/v1/exec.pb.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace af::test {

/// A node whose log lines go to `lines` (JSON), not to stderr.
inline std::unique_ptr<node> quiet_node(std::shared_ptr<std::vector<std::string>> lines = nullptr) {
  node::options opt;
  log_options lo;
  lo.level = log_level::info;
  lo.format = "json";
  lo.node = "test-node";
  opt.log =
      make_memory_log_backend(lo, lines ? lines : std::make_shared<std::vector<std::string>>());
  auto n = node::start(std::move(opt));
  REQUIRE(n.has_value());
  return std::move(*n);
}

/// A StepRequest as an executor sends it: key "<execution>/<step>/<attempt>".
inline v1::StepRequest step_request(std::string input_json, std::uint32_t attempt = 1,
                                    std::string step_id = "s1", std::string execution_id = "e1") {
  v1::StepRequest r;
  r.set_execution_id(execution_id);
  r.set_step_id(step_id);
  r.set_attempt(attempt);
  r.set_idempotency_key(execution_id + "/" + step_id + "/" + std::to_string(attempt));
  r.set_input_json(std::move(input_json));
  r.set_plan_name("test-plan");
  return r;
}

/// Asks `to` for a step; the output parsed, or the error replied.
inline expected<nlohmann::json> ask_step(node& n, const agent_ref& to, const v1::StepRequest& r,
                                         duration timeout = std::chrono::seconds(10)) {
  auto out = n.ask<v1::StepOutput>(to, r, timeout);
  if (!out) return std::move(out).error();
  return nlohmann::json::parse(out->output_json());
}

/// The value of the first exposition line that starts with `series` (-1 when absent).
inline double metric_value(node& n, const std::string& series) {
  const auto text = n.metrics().serialize_text();
  std::size_t pos = 0;
  while ((pos = text.find(series, pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      const auto eol = text.find('\n', pos);
      const auto line = text.substr(pos, eol - pos);
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
    ++pos;
  }
  return -1;
}

} // namespace af::test
