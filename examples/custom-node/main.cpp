// Your own node binary: the whole `af` command (run, submit, exec, node start, ...) with your
// agent types and tools registered next to the built-in std.* agents, no plugin to load.
//
//   af_example_node run examples/plans/shout.yaml --set text="hello there"
//   af_example_node node start --data-dir data --listen 127.0.0.1:7400
//
// See docs/planning.md, "User agents and plugins".
#include <af/cli.hpp>
#include <af/plan/agents.hpp>
#include <af/tool/registry.hpp>
#include <af/v1/exec.pb.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <string>

namespace {

using nlohmann::json;

/// acme.shout: input {text} -> {text: TEXT IN CAPITALS, shouted: how many this instance did}.
class shouter : public af::agent_base<shouter> {
public:
  static void define(af::handlers<shouter>& h) { h.kind("acme.shout").on(&shouter::on_step); }

  af::expected<af::v1::StepOutput> on_step(af::context&, const af::v1::StepRequest& req) {
    const json in = json::parse(req.input_json(), nullptr, /*allow_exceptions=*/false);
    if (!in.is_object() || !in.contains("text") || !in["text"].is_string())
      return af::validation_error("acme.shout: input.text: expected a string");
    std::string text = in["text"].get<std::string>();
    for (auto& c : text)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    af::v1::StepOutput out;
    out.set_output_json(json{{"text", text}, {"shouted", ++shouted_}}.dump());
    return out;
  }

private:
  std::uint64_t shouted_ = 0;
};

/// acme.exclaim: input {text, times = 1} -> {text: TEXT followed by `times` '!'}.
af::expected<json> exclaim(const json& in, const af::tool::call_info&) {
  if (!in.is_object() || !in.contains("text") || !in["text"].is_string())
    return af::validation_error("acme.exclaim: input.text: expected a string");
  const auto times = in.value("times", 1);
  if (times < 0 || times > 100)
    return af::validation_error("acme.exclaim: input.times: expected 0..100");
  return json{{"text", in["text"].get<std::string>() + std::string(static_cast<std::size_t>(times), '!')}};
}

} // namespace

int main(int argc, char** argv) {
  af::cli::extensions ext;
  ext.add = [](af::plan::agent_types& agents, af::tool::registry& tools) {
    af::plan::agent_type shout;
    shout.factory = af::sup::agent_factory<shouter>();
    shout.description = "upper-cases input.text";
    (void)agents.add("acme.shout", std::move(shout));
    (void)tools.add("acme.exclaim", exclaim, "appends input.times exclamation marks");
  };
  return af::cli::main(argc, argv, ext);
}
