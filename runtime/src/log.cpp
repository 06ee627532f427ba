// spdlog-backed implementation of af::log_backend: the caller's thread builds the line without
// its timestamp; a custom spdlog formatter prepends the time spdlog stamped on the message.
#include "af/log.hpp"

#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <exception>
#include <mutex>
#include <utility>

#include <unistd.h>

#include <spdlog/formatter.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace af {

namespace {

using ojson = nlohmann::ordered_json;
constexpr auto k_replace = nlohmann::json::error_handler_t::replace;

constexpr std::array<std::string_view, 6> k_level_names = {"trace", "debug", "info",
                                                           "warn",  "error", "off"};
constexpr std::array<std::string_view, 6> k_level_labels = {"TRACE", "DEBUG", "INFO ",
                                                            "WARN ", "ERROR", "OFF  "};

spdlog::level::level_enum to_spdlog(log_level level) {
  switch (level) {
  case log_level::trace:
    return spdlog::level::trace;
  case log_level::debug:
    return spdlog::level::debug;
  case log_level::info:
    return spdlog::level::info;
  case log_level::warn:
    return spdlog::level::warn;
  case log_level::error:
    return spdlog::level::err;
  case log_level::off:
    break;
  }
  return spdlog::level::off;
}

// Appends `s` to `out` for a one-line terminal rendering: control characters are escaped and
// invalid UTF-8 sequences become U+FFFD.
void append_sanitized(std::string& out, std::string_view s) {
  constexpr std::string_view replacement = "\xEF\xBF\xBD";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c < 0x20 || c == 0x7f) {
        std::array<char, 8> buf{};
        std::snprintf(buf.data(), buf.size(), "\\x%02x", static_cast<unsigned>(c));
        out += buf.data();
      } else {
        out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // Length and the valid range of the second byte (rejects overlongs and surrogates).
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len != 0 && i + len <= n && p[i + 1] >= lo && p[i + 1] <= hi;
    for (std::size_t k = 2; ok && k < len; ++k)
      ok = p[i + k] >= 0x80 && p[i + k] <= 0xBF;
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += replacement;
      ++i;
    }
  }
}

// A text value is written bare unless it is empty or contains a space, quote or '='.
void append_text_string(std::string& out, std::string_view s) {
  if (!s.empty() && s.find_first_of(" \"=") == std::string_view::npos) {
    append_sanitized(out, s);
    return;
  }
  std::string quoted;
  for (char c : s) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  out += '"';
  append_sanitized(out, quoted);
  out += '"';
}

void append_text_value(std::string& out, const nlohmann::json& v) {
  if (v.is_string())
    append_text_string(out, v.get_ref<const std::string&>());
  else
    out += v.dump(-1, ' ', false, k_replace);
}

struct field {
  std::string_view key;
  const std::string* value;
};

std::array<field, 7> context_fields(const log_context& ctx) {
  return {{{"trace_id", &ctx.trace_id},
           {"span_id", &ctx.span_id},
           {"tenant", &ctx.tenant},
           {"plan_id", &ctx.plan_id},
           {"correlation_id", &ctx.correlation_id},
           {"causation_id", &ctx.causation_id},
           {"message_id", &ctx.message_id}}};
}

bool is_reserved(std::string_view key) {
  static constexpr std::array<std::string_view, 13> reserved = {
      "ts",      "level",          "event",        "node",       "trace_id", "span_id", "tenant",
      "plan_id", "correlation_id", "causation_id", "message_id", "msg",      "extra"};
  for (auto r : reserved)
    if (r == key) return true;
  return false;
}

// The JSON line without "ts"; the formatter splices it in after the opening brace.
std::string json_payload(log_level level, std::string_view event, std::string_view msg,
                         const std::string& node, const log_context& ctx,
                         const nlohmann::json& extra) {
  ojson line = ojson::object();
  line["level"] = to_string(level);
  line["event"] = event;
  line["node"] = node;
  for (const auto& f : context_fields(ctx))
    if (!f.value->empty()) line[std::string{f.key}] = *f.value;
  if (!msg.empty()) line["msg"] = msg;
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) {
      if (is_reserved(key))
        line["extra." + key] = value;
      else
        line[key] = value;
    }
  } else if (!extra.is_null()) {
    line["extra"] = extra;
  }
  return line.dump(-1, ' ', false, k_replace);
}

// The text line without its time: `INFO  node_started  msg tenant=t1 key=value`.
std::string text_payload(log_level level, std::string_view event, std::string_view msg,
                         const log_context& ctx, const nlohmann::json& extra) {
  std::string out{k_level_labels[static_cast<std::size_t>(level)]};
  out += ' ';
  append_sanitized(out, event);
  if (!msg.empty()) {
    out += "  ";
    append_sanitized(out, msg);
  }
  for (const auto& f : context_fields(ctx)) {
    if (f.value->empty()) continue;
    out += ' ';
    out += f.key;
    out += '=';
    append_text_string(out, *f.value);
  }
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) {
      out += ' ';
      append_sanitized(out, key);
      out += '=';
      append_text_value(out, value);
    }
  } else if (!extra.is_null()) {
    out += " extra=";
    append_text_value(out, extra);
  }
  return out;
}

// Prepends the time spdlog took when the line was logged (so this file never reads a clock).
class line_formatter final : public spdlog::formatter {
public:
  explicit line_formatter(bool json) : json_(json) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    const auto since_epoch = msg.time.time_since_epoch();
    const auto secs = duration_cast<seconds>(since_epoch);
    const auto micros = duration_cast<microseconds>(since_epoch - secs).count();
    const std::time_t t = static_cast<std::time_t>(secs.count());
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::array<char, 40> buf{};
    int n = 0;
    if (json_) {
      n = std::snprintf(buf.data(), buf.size(), "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\",",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, static_cast<int>(micros));
    } else {
      n = std::snprintf(buf.data(), buf.size(), "%02d:%02d:%02d.%03d ", tm.tm_hour, tm.tm_min,
                        tm.tm_sec, static_cast<int>(micros / 1000));
    }
    if (n > 0) dest.append(buf.data(), buf.data() + n);
    const auto& payload = msg.payload;
    // A JSON payload is a non-empty object: skip its '{', ours is already written.
    const std::size_t skip = json_ && payload.size() > 0 && payload[0] == '{' ? 1 : 0;
    dest.append(payload.data() + skip, payload.data() + payload.size());
    dest.push_back('\n');
  }

  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<line_formatter>(json_);
  }

private:
  bool json_;
};

// Test sink: keeps each formatted line in memory.
class memory_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  explicit memory_sink(std::shared_ptr<std::vector<std::string>> lines)
      : lines_(std::move(lines)) {}

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::string line(buf.data(), buf.size());
    if (!line.empty() && line.back() == '\n') line.pop_back();
    lines_->push_back(std::move(line));
  }
  void flush_() override {}

private:
  std::shared_ptr<std::vector<std::string>> lines_;
};

expected<bool> parse_format(std::string_view format, bool writes_to_terminal) {
  if (format == "json") return false;
  if (format == "text") return true;
  if (format == "auto") return writes_to_terminal;
  return validation_error("log.format: unknown format '" + std::string{format}
                          + "' (expected json|text|auto)");
}

} // namespace

struct log_backend::impl {
  std::shared_ptr<spdlog::logger> sink;
  bool json = true;
  std::string node;
};

namespace {

std::shared_ptr<log_backend> make_backend(spdlog::sink_ptr sink, bool text,
                                          const log_options& opts) {
  auto lg = std::make_shared<spdlog::logger>("af", std::move(sink));
  lg->set_formatter(std::make_unique<line_formatter>(!text));
  lg->set_level(spdlog::level::trace); // af::log_backend filters
  // Every line reaches the file at once, so a node that crashes leaves its last words on disk.
  lg->flush_on(spdlog::level::trace);
  auto state = std::make_unique<log_backend::impl>();
  state->sink = std::move(lg);
  state->json = !text;
  state->node = opts.node;
  return std::make_shared<log_backend>(std::move(state), opts.level);
}

} // namespace

std::string_view to_string(log_level level) noexcept {
  const auto i = static_cast<std::size_t>(level);
  return i < k_level_names.size() ? k_level_names[i] : std::string_view{"off"};
}

expected<log_level> parse_log_level(std::string_view name) {
  std::string lower;
  for (char c : name)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "warning") return log_level::warn;
  for (std::size_t i = 0; i < k_level_names.size(); ++i)
    if (k_level_names[i] == lower) return static_cast<log_level>(i);
  return validation_error("log.level: unknown level '" + std::string{name}
                          + "' (expected trace|debug|info|warn|error|off)");
}

log_backend::log_backend(std::unique_ptr<impl> state, log_level level)
    : level_(level), impl_(std::move(state)) {}

log_backend::~log_backend() = default;

std::shared_ptr<log_backend> log_backend::for_node(std::string node) const {
  auto state = std::make_unique<impl>(*impl_);
  state->node = std::move(node);
  return std::make_shared<log_backend>(std::move(state), level());
}

void log_backend::write(log_level level, std::string_view event, std::string_view msg,
                        const log_context& ctx, const nlohmann::json* extra_or_null) noexcept {
  if (level == log_level::off) return;
  try {
    static const nlohmann::json none;
    const nlohmann::json& extra = extra_or_null != nullptr ? *extra_or_null : none;
    const std::string payload = impl_->json
                                    ? json_payload(level, event, msg, impl_->node, ctx, extra)
                                    : text_payload(level, event, msg, ctx, extra);
    impl_->sink->log(to_spdlog(level), spdlog::string_view_t{payload.data(), payload.size()});
  } catch (const std::exception&) {
    // Logging never takes a node down; the line is lost.
  }
}

void log_backend::flush() noexcept {
  try {
    impl_->sink->flush();
  } catch (const std::exception&) {
  }
}

expected<std::shared_ptr<log_backend>> make_log_backend(const log_options& opts) {
  const bool to_stderr = opts.file.empty();
  auto text = parse_format(opts.format, to_stderr && ::isatty(STDERR_FILENO) == 1);
  if (!text) return std::move(text).error();
  spdlog::sink_ptr sink;
  if (to_stderr) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.file, false);
    } catch (const std::exception& e) {
      return validation_error("log.file: cannot open '" + opts.file
                              + "' for appending: " + e.what());
    }
  }
  return make_backend(std::move(sink), *text, opts);
}

std::shared_ptr<log_backend>
make_memory_log_backend(const log_options& opts, std::shared_ptr<std::vector<std::string>> lines) {
  assert(lines != nullptr);
  auto text = parse_format(opts.format, false);
  assert(text.has_value() && "log.format must be json|text|auto");
  return make_backend(std::make_shared<memory_sink>(std::move(lines)), text && *text, opts);
}

logger::logger(std::shared_ptr<log_backend> backend, log_context ctx)
    : backend_(std::move(backend)), ctx_(std::make_shared<const log_context>(std::move(ctx))) {}

const log_context& logger::context() const noexcept {
  static const log_context empty;
  return ctx_ ? *ctx_ : empty;
}

logger logger::with(const log_context& ctx) const {
  log_context merged = context();
  auto take = [](std::string& into, const std::string& from) {
    if (!from.empty()) into = from;
  };
  take(merged.trace_id, ctx.trace_id);
  take(merged.span_id, ctx.span_id);
  take(merged.tenant, ctx.tenant);
  take(merged.plan_id, ctx.plan_id);
  take(merged.correlation_id, ctx.correlation_id);
  take(merged.causation_id, ctx.causation_id);
  take(merged.message_id, ctx.message_id);
  return logger{backend_, std::move(merged)};
}

} // namespace af
