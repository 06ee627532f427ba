// The two systems every messaging benchmark compares: an AgentFlow node with its default
// configuration (af::config::defaults(): work stealing, 2 threads) and a bare CAF actor system set
// to the same scheduler policy and thread count.
#pragma once

#include "af/config.hpp"
#include "af/log.hpp"
#include "af/node.hpp"

#include <caf/all.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace bench {

/// A node with the default configuration; only its log level is raised to `warn` so that the
/// bench's stdout/stderr carry no per-run start/stop lines (the scheduler is left as configured).
inline std::unique_ptr<af::node> start_node() {
  af::node::options opt; // cfg = af::config::defaults()
  af::log_options lo;
  lo.level = af::log_level::warn;
  lo.format = "text";
  auto backend = af::make_log_backend(lo);
  if (backend) opt.log = *backend;
  auto n = af::node::start(std::move(opt));
  if (!n) {
    std::fprintf(stderr, "bench: node start failed: %s\n", n.error().to_string().c_str());
    std::exit(1);
  }
  return std::move(*n);
}

/// The bare-CAF baseline's configuration: the node's scheduler policy and thread count.
class bare_config : public caf::actor_system_config {
public:
  bare_config() {
    const auto defaults = af::config::defaults();
    set("scheduler.policy", caf::atom_from_string(defaults.get_string("scheduler.policy")));
    set("scheduler.max-threads", static_cast<std::size_t>(defaults.get_int("scheduler.threads")));
  }
};

} // namespace bench
