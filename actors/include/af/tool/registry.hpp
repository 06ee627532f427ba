// In-process tools: C++ functions registered with the node under a name, called by plan steps
// (`tool: NAME`). Each tool runs in its own invoker agent (supervised, named "tool.NAME"), so a
// tool that throws crashes and restarts only its invoker. Sandboxed-process, HTTP and MCP tools
// come later behind the same step kind.
#pragma once

#include "af/agent.hpp"
#include "af/error.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace af::tool {

/// What a tool call knows about the step that made it.
struct call_info {
  std::string execution_id;
  std::string step_id;
  std::uint32_t attempt = 1;
  std::string idempotency_key; ///< "<execution_id>/<step_id>/<attempt>"
  std::string tenant;
};

using function = std::function<expected<nlohmann::json>(const nlohmann::json& input,
                                                         const call_info& call)>;

struct tool {
  function fn;
  std::string description;
  /// Run the invoker on a thread of its own (a tool that blocks on I/O).
  bool detached = false;
};

/// The name of the invoker agent of tool `name`.
[[nodiscard]] std::string invoker_name(std::string_view name);

/// Name -> tool. Names are non-empty and made of [A-Za-z0-9_.-]; adding a name twice is a
/// `conflict`. Not thread-safe: fill it before the node starts executions.
class registry {
public:
  status add(std::string name, tool t);
  status add(std::string name, function fn, std::string description = {}) {
    return add(std::move(name), tool{std::move(fn), std::move(description)});
  }
  [[nodiscard]] const tool* find(std::string_view name) const;
  [[nodiscard]] std::vector<std::string> names() const;

private:
  std::map<std::string, tool, std::less<>> tools_;
};

/// An agent that answers af.v1.StepRequest by calling `t` (the input is StepRequest.input_json
/// parsed; the output is serialized into StepOutput.output_json). A throwing tool becomes an
/// `internal` error reply; the invoker stays up.
[[nodiscard]] std::unique_ptr<agent> make_invoker(std::string name, tool t);

} // namespace af::tool
