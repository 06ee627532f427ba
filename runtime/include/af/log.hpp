// Structured logging of a node: one JSON object per line (or a compact text line on a terminal),
// carrying the node name, trace context, tenant and correlation ids (ARCHITECTURE.md invariant 7).
#pragma once

#include "af/error.hpp"

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace af {

/// Severity, lowest first; `off` disables a backend.
enum class log_level : unsigned char { trace, debug, info, warn, error, off };

/// "trace", "debug", "info", "warn", "error", "off".
[[nodiscard]] std::string_view to_string(log_level level) noexcept;

/// Parses the names of `to_string` (case-insensitive; "warning" is accepted for "warn").
[[nodiscard]] expected<log_level> parse_log_level(std::string_view name);

struct log_options {
  log_level level = log_level::info;
  /// "json", "text", or "auto": text when writing to stderr and stderr is a terminal, else json.
  std::string format = "auto";
  /// Empty: stderr. Otherwise the file is appended to (parent directories are created) and
  /// flushed after every line, so a node that crashes leaves its last lines on disk.
  std::string file;
  /// Written as `node` on every JSON line.
  std::string node;
};

/// Who and what a line is about. Empty fields are omitted from the output.
struct log_context {
  std::string trace_id{}; ///< W3C trace id, 32 lower-case hex chars
  std::string span_id{};  ///< W3C span id, 16 lower-case hex chars
  std::string tenant{};
  std::string plan_id{};
  std::string correlation_id{};
  std::string causation_id{};
  std::string message_id{};
};

/// A sink plus the minimum level, shared by every logger made from it; thread-safe. Its
/// implementation (spdlog) stays private; only the level is inline so that a disabled line costs
/// one relaxed atomic load.
class log_backend {
public:
  struct impl;

  log_backend(std::unique_ptr<impl> state, log_level level);
  ~log_backend();
  log_backend(const log_backend&) = delete;
  log_backend& operator=(const log_backend&) = delete;

  [[nodiscard]] log_level level() const noexcept { return level_.load(std::memory_order_relaxed); }
  void set_level(log_level level) noexcept { level_.store(level, std::memory_order_relaxed); }

  /// Formats and writes one line regardless of the level; `extra` may be null. Never throws (a
  /// line that cannot be written is dropped).
  void write(log_level level, std::string_view event, std::string_view msg, const log_context& ctx,
             const nlohmann::json* extra) noexcept;
  void flush() noexcept;

  /// A backend writing to the same sink, at the same format and level, with `node` on its lines
  /// (the simulator's nodes share one log file).
  [[nodiscard]] std::shared_ptr<log_backend> for_node(std::string node) const;

private:
  std::atomic<log_level> level_;
  std::unique_ptr<impl> impl_;
};

/// Writes to `opts.file` (appending) or to stderr. Fails if the file cannot be opened or
/// `opts.format` is not json|text|auto.
[[nodiscard]] expected<std::shared_ptr<log_backend>> make_log_backend(const log_options& opts);

/// For tests: appends each formatted line (without its newline) to `lines`, under the backend's
/// lock; read `lines` only once the logging threads are done. "auto" means json here.
[[nodiscard]] std::shared_ptr<log_backend>
make_memory_log_backend(const log_options& opts, std::shared_ptr<std::vector<std::string>> lines);

/// A backend plus a context; cheap to copy (two shared pointers). A default-constructed logger
/// drops everything.
///
/// JSON line: {"ts":"2026-11-21T22:01:02.123456Z","level":"info","event":"node_started",
///   "node":"n1","trace_id":..,"span_id":..,"tenant":..,"plan_id":..,"correlation_id":..,
///   "causation_id":..,"message_id":..,"msg":"..", <extra fields>}
/// Extra fields whose key collides with one of the fields above are written as "extra.<key>";
/// an `extra` that is not an object is written as "extra". Invalid UTF-8 becomes U+FFFD.
/// Text line: `22:01:02.123 INFO  node_started  msg tenant=t1 key=value` (UTC, no node).
///
/// `extra` is built by the caller even when the level is disabled: guard expensive extras with
/// `enabled()`.
class logger {
public:
  logger() = default;
  explicit logger(std::shared_ptr<log_backend> backend, log_context ctx = {});

  /// A logger whose context is this one's with the non-empty fields of `ctx` replacing it.
  [[nodiscard]] logger with(const log_context& ctx) const;
  [[nodiscard]] const log_context& context() const noexcept;

  [[nodiscard]] bool enabled(log_level level) const noexcept {
    return backend_ != nullptr && level != log_level::off && level >= backend_->level();
  }

  // Each level has two overloads, so that a call without `extra` does not build a JSON value.
  void log(log_level level, std::string_view event, std::string_view msg = {}) const noexcept {
    if (enabled(level)) backend_->write(level, event, msg, context(), nullptr);
  }
  void log(log_level level, std::string_view event, std::string_view msg,
           const nlohmann::json& extra) const noexcept {
    if (enabled(level)) backend_->write(level, event, msg, context(), &extra);
  }
  void trace(std::string_view event, std::string_view msg = {}) const noexcept {
    log(log_level::trace, event, msg);
  }
  void trace(std::string_view event, std::string_view msg,
             const nlohmann::json& extra) const noexcept {
    log(log_level::trace, event, msg, extra);
  }
  void debug(std::string_view event, std::string_view msg = {}) const noexcept {
    log(log_level::debug, event, msg);
  }
  void debug(std::string_view event, std::string_view msg,
             const nlohmann::json& extra) const noexcept {
    log(log_level::debug, event, msg, extra);
  }
  void info(std::string_view event, std::string_view msg = {}) const noexcept {
    log(log_level::info, event, msg);
  }
  void info(std::string_view event, std::string_view msg,
            const nlohmann::json& extra) const noexcept {
    log(log_level::info, event, msg, extra);
  }
  void warn(std::string_view event, std::string_view msg = {}) const noexcept {
    log(log_level::warn, event, msg);
  }
  void warn(std::string_view event, std::string_view msg,
            const nlohmann::json& extra) const noexcept {
    log(log_level::warn, event, msg, extra);
  }
  void error(std::string_view event, std::string_view msg = {}) const noexcept {
    log(log_level::error, event, msg);
  }
  void error(std::string_view event, std::string_view msg,
             const nlohmann::json& extra) const noexcept {
    log(log_level::error, event, msg, extra);
  }

  /// Changes the level of the shared backend, i.e. of every logger made from it.
  void set_level(log_level level) const noexcept {
    if (backend_) backend_->set_level(level);
  }
  [[nodiscard]] log_level level() const noexcept {
    return backend_ ? backend_->level() : log_level::off;
  }
  void flush() const noexcept {
    if (backend_) backend_->flush();
  }

private:
  std::shared_ptr<log_backend> backend_;
  std::shared_ptr<const log_context> ctx_;
};

} // namespace af
