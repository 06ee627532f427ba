// An AgentFlow plugin: one agent type (acme.summarize) and one tool (acme.wordcount) that plans
// can name once a node loads it (`af --plugin libaf_example_plugin.so`). See docs/planning.md,
// "User agents and plugins".
#include <af/plan/agents.hpp>
#include <af/plan/plugin.hpp>
#include <af/tool/registry.hpp>
#include <af/v1/exec.pb.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

namespace {

using nlohmann::json;

/// Splits text into sentences at '.', '!' or '?' followed by a space or the end.
std::vector<std::string> sentences_of(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i < text.size(); ++i) {
    cur += text[i];
    const bool end = text[i] == '.' || text[i] == '!' || text[i] == '?';
    if (end && (i + 1 == text.size() || std::isspace(static_cast<unsigned char>(text[i + 1])))) {
      out.push_back(cur);
      cur.clear();
      while (i + 1 < text.size() && std::isspace(static_cast<unsigned char>(text[i + 1])))
        ++i;
    }
  }
  if (cur.find_first_not_of(" \t\r\n") != std::string::npos) out.push_back(cur);
  return out;
}

std::size_t words_in(std::string_view text) {
  std::size_t n = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

/// acme.summarize: input {text, max_sentences = 1} -> {summary, sentences, words}. An
/// extractive summary (the leading sentences), which is deterministic and needs no model.
class summarizer : public af::agent_base<summarizer> {
public:
  static void define(af::handlers<summarizer>& h) {
    h.kind("acme.summarize").on(&summarizer::on_step);
  }

  af::expected<af::v1::StepOutput> on_step(af::context& ctx, const af::v1::StepRequest& req) {
    const json in = json::parse(req.input_json(), nullptr, /*allow_exceptions=*/false);
    if (!in.is_object() || !in.contains("text") || !in["text"].is_string())
      return af::validation_error("acme.summarize: input.text: expected a string");
    std::size_t max = 1;
    if (auto it = in.find("max_sentences"); it != in.end()) {
      if (!it->is_number_unsigned() || it->get<std::size_t>() == 0)
        return af::validation_error(
            "acme.summarize: input.max_sentences: expected an integer >= 1");
      max = it->get<std::size_t>();
    }
    const auto text = in["text"].get<std::string>();
    const auto all = sentences_of(text);
    std::string summary;
    for (std::size_t i = 0; i < all.size() && i < max; ++i)
      summary += (i == 0 ? "" : " ") + all[i];
    ++summarized_;
    ctx.log().info("summarized", "", {{"step_id", req.step_id()}, {"count", summarized_}});
    af::v1::StepOutput out;
    out.set_output_json(
        json{{"summary", summary}, {"sentences", all.size()}, {"words", words_in(text)}}.dump());
    return out;
  }

private:
  std::uint64_t summarized_ = 0;
};

/// acme.wordcount: input {text} -> {words, lines, characters}.
af::expected<json> wordcount(const json& in, const af::tool::call_info&) {
  if (!in.is_object() || !in.contains("text") || !in["text"].is_string())
    return af::validation_error("acme.wordcount: input.text: expected a string");
  const auto& text = in["text"].get_ref<const std::string&>();
  std::size_t lines = text.empty() ? 0 : 1;
  for (char c : text)
    lines += c == '\n' ? 1 : 0;
  if (!text.empty() && text.back() == '\n') --lines;
  return json{{"words", words_in(text)}, {"lines", lines}, {"characters", text.size()}};
}

} // namespace

AF_PLUGIN_DECLARE_ABI();

extern "C" int agentflow_plugin_init(af_plugin_host* host, unsigned abi_version) {
  if (abi_version != AF_PLUGIN_ABI_VERSION) return 1; // the host checks too
  af::plan::agent_type summarize;
  summarize.factory = af::sup::agent_factory<summarizer>();
  summarize.description = "extractive summary: the leading input.max_sentences sentences";
  if (auto ok = af::plan::plugin_agents(host).add("acme.summarize", std::move(summarize)); !ok) {
    af::plan::plugin_fail(host, ok.error().to_string().c_str());
    return 1;
  }
  if (auto ok = af::plan::plugin_tools(host).add("acme.wordcount", wordcount,
                                                 "counts words, lines and characters");
      !ok) {
    af::plan::plugin_fail(host, ok.error().to_string().c_str());
    return 1;
  }
  return 0;
}
