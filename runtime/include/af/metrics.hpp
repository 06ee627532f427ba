// The metrics registry of a node (prometheus-cpp behind a pimpl): the core families, cheap
// label-bound handles for hot paths, the text exposition and an optional /metrics HTTP endpoint.
#pragma once

#include "af/error.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
} // namespace prometheus

namespace af {

/// Label names to values. Use the reserved names (tenant, workflow_id, agent_id, tool_id,
/// plan_id, outcome) with values from bounded sets (ARCHITECTURE.md invariant 7).
using metric_labels = std::map<std::string, std::string>;

/// One counter series. Fetch once, then `inc` is a single atomic add. A default-constructed
/// handle ignores updates and reads 0. Valid as long as the `metrics` that made it.
class counter_handle {
public:
  counter_handle() = default;
  explicit counter_handle(prometheus::Counter* c) noexcept : c_(c) {}
  /// Negative increments are ignored.
  void inc(double v = 1) const;
  [[nodiscard]] double value() const;
  explicit operator bool() const noexcept { return c_ != nullptr; }

private:
  prometheus::Counter* c_ = nullptr;
};

/// One gauge series; see counter_handle.
class gauge_handle {
public:
  gauge_handle() = default;
  explicit gauge_handle(prometheus::Gauge* g) noexcept : g_(g) {}
  void set(double v) const;
  void inc(double v = 1) const;
  void dec(double v = 1) const;
  [[nodiscard]] double value() const;
  explicit operator bool() const noexcept { return g_ != nullptr; }

private:
  prometheus::Gauge* g_ = nullptr;
};

/// One histogram series; see counter_handle.
class histogram_handle {
public:
  histogram_handle() = default;
  explicit histogram_handle(prometheus::Histogram* h) noexcept : h_(h) {}
  void observe(double v) const;
  explicit operator bool() const noexcept { return h_ != nullptr; }

private:
  prometheus::Histogram* h_ = nullptr;
};

/// Values of the `outcome` label of af_agent_messages_total.
namespace message_outcome {
inline constexpr std::string_view handled = "handled";
inline constexpr std::string_view rejected = "rejected";
inline constexpr std::string_view failed = "failed";
inline constexpr std::string_view sent = "sent";
} // namespace message_outcome

/// Values of the `reason` label of af_envelope_rejected_total.
namespace reject_reason {
inline constexpr std::string_view malformed = "malformed";
inline constexpr std::string_view oversized = "oversized";
inline constexpr std::string_view unknown_type = "unknown_type";
inline constexpr std::string_view hash_mismatch = "hash_mismatch";
} // namespace reject_reason

/// The registry of one node. Thread-safe; handles may be used from any thread. A moved-from
/// `metrics` may only be destroyed or assigned to.
class metrics {
public:
  /// Registers the core families and sets af_node_info{node, version} to 1.
  metrics(std::string node, std::string version);
  ~metrics();
  metrics(const metrics&) = delete;
  metrics& operator=(const metrics&) = delete;
  metrics(metrics&&) noexcept;
  metrics& operator=(metrics&&) noexcept;

  // --- core families --------------------------------------------------------------------------

  /// af_agent_messages_total{tenant, agent_id, outcome}. `agent_id` carries the agent's *kind*,
  /// not its instance id, to keep the cardinality bounded. `outcome` is one of message_outcome.
  [[nodiscard]] counter_handle agent_messages(std::string_view tenant, std::string_view agent_kind,
                                              std::string_view outcome);
  /// af_agent_ask_duration_seconds{agent_id = kind}: 13 buckets from 10 us to 10 s (x sqrt 10).
  [[nodiscard]] histogram_handle ask_duration(std::string_view agent_kind);
  /// af_agents_active: live agents on this node.
  [[nodiscard]] gauge_handle agents_active();
  /// af_envelope_rejected_total{reason}; `reason` is one of reject_reason.
  [[nodiscard]] counter_handle envelope_rejected(std::string_view reason);

  // --- families of other modules --------------------------------------------------------------
  // A family is created on first use and cached by name; the help text of later calls is
  // ignored. Errors: invalid metric or label name, the name already used by another type, or
  // (histograms) buckets that are empty, not increasing, or differ from the family's.

  [[nodiscard]] expected<counter_handle> counter(std::string_view name, std::string_view help,
                                                 const metric_labels& labels = {});
  [[nodiscard]] expected<gauge_handle> gauge(std::string_view name, std::string_view help,
                                             const metric_labels& labels = {});
  [[nodiscard]] expected<histogram_handle> histogram(std::string_view name, std::string_view help,
                                                     const metric_labels& labels,
                                                     const std::vector<double>& buckets);

  /// `count` bounds: start, start*factor, start*factor^2, ...
  [[nodiscard]] static std::vector<double> exponential_buckets(double start, double factor,
                                                               std::size_t count);

  // --- exposition -----------------------------------------------------------------------------

  /// The Prometheus text exposition (format 0.0.4) of every family.
  [[nodiscard]] std::string serialize_text() const;

  /// Serves GET /metrics on "host:port" (port 0 picks a free port; IPv6 as "[::1]:port" where
  /// civetweb is built with IPv6, which Debian's is not).
  /// Returns the bound port, or an error naming the address: validation (malformed or
  /// non-local address), conflict (address in use), forbidden (privileged port), or conflict
  /// if an exposer is already running.
  [[nodiscard]] expected<std::uint16_t> start_exposer(const std::string& host_port);
  /// Stops serving; no-op when not started.
  void stop_exposer();
  /// The bound port, or 0 when not serving.
  [[nodiscard]] std::uint16_t exposer_port() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace af
