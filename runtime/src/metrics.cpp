// prometheus-cpp implementation of af::metrics: families cached by name, label-bound handles,
// text exposition and a civetweb-backed /metrics endpoint.
#include "af/metrics.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <type_traits>
#include <utility>
#include <variant>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace af {

namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

template <class T>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<T, Counter>)
    return "counter";
  else if constexpr (std::is_same_v<T, Gauge>)
    return "gauge";
  else
    return "histogram";
}

template <class T>
constexpr std::string_view type_name_of(const Family<T>*) {
  return type_name<T>();
}

struct family_entry {
  std::variant<Family<Counter>*, Family<Gauge>*, Family<Histogram>*> family;
  std::vector<double> buckets; // histograms only: every series of the family uses these
};

prometheus::Labels to_labels(const metric_labels& labels) {
  return prometheus::Labels(labels.begin(), labels.end());
}

// 10 us .. 10 s, two buckets per decade; computed from powers of ten so the bounds print round.
std::vector<double> ask_buckets() {
  std::vector<double> out;
  for (int k = -10; k <= 2; ++k)
    out.push_back(std::pow(10.0, k / 2.0));
  return out;
}

bool valid_buckets(const std::vector<double>& b) {
  if (b.empty()) return false;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(b[i]) || (i > 0 && b[i] <= b[i - 1])) return false;
  }
  return true;
}

// "host:port" split into host (brackets of IPv6 removed) and port, or an error.
struct address {
  std::string host;
  std::string port;
};

expected<address> parse_address(const std::string& host_port) {
  auto bad = [&](std::string_view why) {
    return validation_error("metrics.listen: '" + host_port + "': " + std::string{why}
                            + " (expected host:port, e.g. 127.0.0.1:9464 or 0.0.0.0:0)");
  };
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) return bad("missing port");
  address a{host_port.substr(0, colon), host_port.substr(colon + 1)};
  if (a.port.empty() || a.port.size() > 5
      || a.port.find_first_not_of("0123456789") != std::string::npos || std::stoul(a.port) > 65535)
    return bad("port must be a number from 0 to 65535");
  if (a.host.size() >= 2 && a.host.front() == '[' && a.host.back() == ']')
    a.host = a.host.substr(1, a.host.size() - 2);
  if (a.host.empty()) return bad("missing host");
  if (a.host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")
      != std::string::npos)
    return bad("invalid host");
  if (a.host.find(':') != std::string::npos && host_port.front() != '[')
    return bad("IPv6 hosts must be bracketed");
  // civetweb reads "999.1.1.1" as 231.1.1.1: check numeric hosts ourselves.
  if (a.host.find_first_not_of("0123456789.") == std::string::npos) {
    in_addr v4{};
    if (::inet_pton(AF_INET, a.host.c_str(), &v4) != 1) return bad("invalid IPv4 address");
  }
  return a;
}

// civetweb only says "possible problem binding to port": bind the address ourselves to learn
// why. Returns the error to report.
error diagnose_bind_failure(const std::string& host_port, const address& a,
                            std::string_view civetweb_what) {
  const std::string prefix = "metrics.listen: cannot listen on '" + host_port + "': ";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(a.host.c_str(), a.port.c_str(), &hints, &res); rc != 0)
    return validation_error(prefix + ::gai_strerror(rc));
  int err = 0;
  const int fd = ::socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  if (fd < 0) {
    err = errno;
  } else {
    const int one = 1; // as civetweb does, so TIME_WAIT is not mistaken for "in use"
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0) err = errno;
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (err == 0) {
    if (a.host.find(':') != std::string::npos)
      return validation_error(prefix
                              + "civetweb cannot listen on it (it may be built without "
                                "IPv6 support, as Debian's is)");
    return internal_error(prefix + std::string{civetweb_what});
  }
  const std::string why = std::strerror(err);
  if (err == EADDRINUSE) return make_error(errc::conflict, prefix + why);
  if (err == EACCES) return make_error(errc::forbidden, prefix + why);
  return validation_error(prefix + why);
}

} // namespace

// --- handles ----------------------------------------------------------------------------------

void counter_handle::inc(double v) const {
  if (c_ != nullptr) c_->Increment(v);
}
double counter_handle::value() const { return c_ != nullptr ? c_->Value() : 0.0; }

void gauge_handle::set(double v) const {
  if (g_ != nullptr) g_->Set(v);
}
void gauge_handle::inc(double v) const {
  if (g_ != nullptr) g_->Increment(v);
}
void gauge_handle::dec(double v) const {
  if (g_ != nullptr) g_->Decrement(v);
}
double gauge_handle::value() const { return g_ != nullptr ? g_->Value() : 0.0; }

void histogram_handle::observe(double v) const {
  if (h_ != nullptr) h_->Observe(v);
}

// --- registry ---------------------------------------------------------------------------------

struct metrics::impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();

  std::mutex families_mutex;
  std::map<std::string, family_entry, std::less<>> families;

  Family<Counter>* agent_messages = nullptr;
  Family<Histogram>* ask_duration = nullptr;
  Gauge* agents_active = nullptr;
  Family<Counter>* envelope_rejected = nullptr;
  std::vector<double> ask_duration_buckets = ask_buckets();

  mutable std::mutex exposer_mutex;
  std::unique_ptr<prometheus::Exposer> exposer; // after `registry`: stops serving first
  std::uint16_t port = 0;

  // The family called `name`, created on first use; `buckets` only for histograms.
  template <class T>
  expected<Family<T>*> family(std::string_view name, std::string_view help,
                              const std::vector<double>* buckets = nullptr) {
    std::lock_guard lock{families_mutex};
    if (auto it = families.find(name); it != families.end()) {
      auto* const* f = std::get_if<Family<T>*>(&it->second.family);
      if (f == nullptr) {
        const std::string_view existing =
            std::visit([](auto* fam) { return type_name_of(fam); }, it->second.family);
        return validation_error("metrics: '" + std::string{name} + "' is already a "
                                + std::string{existing} + ", not a " + std::string{type_name<T>()});
      }
      if (buckets != nullptr && *buckets != it->second.buckets)
        return validation_error("metrics: '" + std::string{name}
                                + "': buckets differ from those the family was created with");
      return *f;
    }
    if (buckets != nullptr && !valid_buckets(*buckets))
      return validation_error("metrics: '" + std::string{name}
                              + "': buckets must be finite, strictly increasing and non-empty");
    try {
      Family<T>* f = nullptr;
      if constexpr (std::is_same_v<T, Counter>)
        f = &prometheus::BuildCounter()
                 .Name(std::string{name})
                 .Help(std::string{help})
                 .Register(*registry);
      else if constexpr (std::is_same_v<T, Gauge>)
        f = &prometheus::BuildGauge()
                 .Name(std::string{name})
                 .Help(std::string{help})
                 .Register(*registry);
      else
        f = &prometheus::BuildHistogram()
                 .Name(std::string{name})
                 .Help(std::string{help})
                 .Register(*registry);
      families.emplace(std::string{name},
                       family_entry{f, buckets != nullptr ? *buckets : std::vector<double>{}});
      return f;
    } catch (const std::exception& e) {
      return validation_error("metrics: cannot register '" + std::string{name} + "': " + e.what());
    }
  }

  template <class T, class... Args>
  expected<T*> series(std::string_view name, std::string_view help, const metric_labels& labels,
                      const std::vector<double>* buckets, Args&&... args) {
    auto f = family<T>(name, help, buckets);
    if (!f) return std::move(f).error();
    try {
      return &(*f)->Add(to_labels(labels), std::forward<Args>(args)...);
    } catch (const std::exception& e) {
      return validation_error("metrics: '" + std::string{name} + "': invalid labels: " + e.what());
    }
  }
};

namespace {
template <class T>
T must(expected<T> v) {
  assert(v.has_value() && "core metric families are valid by construction");
  return *v;
}
} // namespace

metrics::metrics(std::string node, std::string version) : impl_(std::make_unique<impl>()) {
  auto& s = *impl_;
  s.agent_messages = must(s.family<Counter>(
      "af_agent_messages_total",
      "Agent messages by tenant, agent kind (agent_id) and outcome: handled, rejected, failed, "
      "sent."));
  s.ask_duration = must(s.family<Histogram>(
      "af_agent_ask_duration_seconds",
      "Time from sending an ask to an agent, by agent kind (agent_id), to its reply.",
      &s.ask_duration_buckets));
  s.agents_active = &must(s.family<Gauge>("af_agents_active", "Live agents on this node."))
                         ->Add(prometheus::Labels{});
  s.envelope_rejected = must(s.family<Counter>(
      "af_envelope_rejected_total",
      "Envelopes rejected before reaching a handler, by reason: malformed, oversized, "
      "unknown_type, hash_mismatch."));
  must(s.family<Gauge>("af_node_info", "Constant 1, labelled with the node name and version."))
      ->Add({{"node", std::move(node)}, {"version", std::move(version)}})
      .Set(1);
}

metrics::~metrics() = default;
metrics::metrics(metrics&&) noexcept = default;
metrics& metrics::operator=(metrics&&) noexcept = default;

counter_handle metrics::agent_messages(std::string_view tenant, std::string_view agent_kind,
                                       std::string_view outcome) {
  assert((outcome == message_outcome::handled || outcome == message_outcome::rejected
          || outcome == message_outcome::failed || outcome == message_outcome::sent)
         && "af_agent_messages_total: unknown outcome");
  return counter_handle{&impl_->agent_messages->Add({{"tenant", std::string{tenant}},
                                                     {"agent_id", std::string{agent_kind}},
                                                     {"outcome", std::string{outcome}}})};
}

histogram_handle metrics::ask_duration(std::string_view agent_kind) {
  return histogram_handle{&impl_->ask_duration->Add({{"agent_id", std::string{agent_kind}}},
                                                    impl_->ask_duration_buckets)};
}

gauge_handle metrics::agents_active() { return gauge_handle{impl_->agents_active}; }

counter_handle metrics::envelope_rejected(std::string_view reason) {
  assert((reason == reject_reason::malformed || reason == reject_reason::oversized
          || reason == reject_reason::unknown_type || reason == reject_reason::hash_mismatch)
         && "af_envelope_rejected_total: unknown reason");
  return counter_handle{&impl_->envelope_rejected->Add({{"reason", std::string{reason}}})};
}

expected<counter_handle> metrics::counter(std::string_view name, std::string_view help,
                                          const metric_labels& labels) {
  auto c = impl_->series<Counter>(name, help, labels, nullptr);
  if (!c) return std::move(c).error();
  return counter_handle{*c};
}

expected<gauge_handle> metrics::gauge(std::string_view name, std::string_view help,
                                      const metric_labels& labels) {
  auto g = impl_->series<Gauge>(name, help, labels, nullptr);
  if (!g) return std::move(g).error();
  return gauge_handle{*g};
}

expected<histogram_handle> metrics::histogram(std::string_view name, std::string_view help,
                                              const metric_labels& labels,
                                              const std::vector<double>& buckets) {
  auto h = impl_->series<Histogram>(name, help, labels, &buckets, buckets);
  if (!h) return std::move(h).error();
  return histogram_handle{*h};
}

std::vector<double> metrics::exponential_buckets(double start, double factor, std::size_t count) {
  std::vector<double> out;
  out.reserve(count);
  double v = start;
  for (std::size_t i = 0; i < count; ++i, v *= factor)
    out.push_back(v);
  return out;
}

std::string metrics::serialize_text() const {
  return prometheus::TextSerializer{}.Serialize(impl_->registry->Collect());
}

expected<std::uint16_t> metrics::start_exposer(const std::string& host_port) {
  auto addr = parse_address(host_port);
  if (!addr) return std::move(addr).error();
  std::lock_guard lock{impl_->exposer_mutex};
  if (impl_->exposer)
    return make_error(errc::conflict, "metrics.listen: cannot listen on '" + host_port
                                          + "': already serving on port "
                                          + std::to_string(impl_->port));
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(host_port, 2);
  } catch (const std::exception& e) {
    return diagnose_bind_failure(host_port, *addr, e.what());
  }
  const auto ports = exposer->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0 || ports.front() > 65535)
    return internal_error("metrics.listen: '" + host_port + "': no listening port reported");
  exposer->RegisterCollectable(impl_->registry);
  impl_->port = static_cast<std::uint16_t>(ports.front());
  impl_->exposer = std::move(exposer);
  return impl_->port;
}

void metrics::stop_exposer() {
  std::unique_ptr<prometheus::Exposer> exposer;
  {
    std::lock_guard lock{impl_->exposer_mutex};
    exposer = std::move(impl_->exposer);
    impl_->port = 0;
  }
  // Destroyed outside the lock: joining civetweb's threads may take a moment.
}

std::uint16_t metrics::exposer_port() const {
  std::lock_guard lock{impl_->exposer_mutex};
  return impl_->port;
}

} // namespace af
