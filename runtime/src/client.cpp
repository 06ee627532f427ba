#include "af/client.hpp"

#include "af/host_port.hpp"
#include "caf_glue.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <optional>

namespace af {

struct remote_node::impl {
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  envelope_actor control;
  std::string target;
  services svc = services::real(0);
  rng r{svc.random->next_u64()};
};

remote_node::remote_node(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

remote_node::~remote_node() {
  if (impl_) impl_->control = nullptr;
}

expected<std::unique_ptr<remote_node>> remote_node::connect(const std::string& text) {
  auto hp = parse_host_port(text, "--connect");
  if (!hp) return hp.error();
  auto p = std::make_unique<impl>();
  p->cfg = std::make_unique<caf::actor_system_config>();
  p->cfg->set("scheduler.max-threads", static_cast<std::size_t>(1));
  p->cfg->load<caf::io::middleman>();
  p->cfg->add_message_type<envelope>("af.envelope");
  p->sys = std::make_unique<caf::actor_system>(*p->cfg);
  auto remote = p->sys->middleman().remote_actor<envelope_actor>(hp->host, hp->port);
  if (!remote)
    return error{errc::transient,
                 "cannot connect to node at " + text + ": " + p->sys->render(remote.error())};
  p->control = *remote;
  p->target = text;
  return std::unique_ptr<remote_node>(new remote_node(std::move(p)));
}

expected<envelope> remote_node::ask_erased(std::string_view agent_name,
                                           std::shared_ptr<const google::protobuf::Message> msg,
                                           duration timeout) {
  auto& p = *impl_;
  envelope_fields f;
  f.message_id = p.svc.ids->next();
  f.tenant = "default";
  for (std::size_t i = 0; i < 16; ++i)
    f.trace.trace_id[i] = static_cast<std::uint8_t>(p.r.next_u64());
  for (std::size_t i = 0; i < 8; ++i)
    f.trace.span_id[i] = static_cast<std::uint8_t>(p.r.next_u64());
  f.trace.flags = 1;
  f.sender = {"af-cli", "af.cli"};
  f.receiver = {"", std::string{agent_name}};
  f.payload = std::move(msg);
  auto env = envelope::make(std::move(f));
  caf::scoped_actor self{*p.sys};
  std::optional<expected<envelope>> result;
  self->request(p.control, timeout, std::move(env))
      .receive([&](const envelope& reply) { result.emplace(reply); },
               [&](const caf::error& err) { result.emplace(ask_error(err, p.target, timeout)); });
  return std::move(*result);
}

} // namespace af
