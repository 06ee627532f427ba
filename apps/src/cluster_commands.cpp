// `af cluster members`, `af cluster raft` and `af ask`: query a running node's membership view and
// its Raft member's state, and ask any agent
// (a named one, or a virtual agent "Kind/id" wherever the cluster places it) through a node's
// control endpoint, with a payload given as Protobuf JSON.
#include "af/cli.hpp"
#include "af/client.hpp"
#include "af/v1/cluster.pb.h"
#include "af/v1/meta.pb.h"
#include "commands.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include <iomanip>

namespace af::cli::detail {

namespace {

namespace pb = google::protobuf;

const char* state_name(v1::MemberState s) {
  switch (s) {
  case v1::MEMBER_ALIVE:
    return "alive";
  case v1::MEMBER_SUSPECT:
    return "suspect";
  case v1::MEMBER_DEAD:
    return "dead";
  case v1::MEMBER_LEFT:
    return "left";
  default:
    return "unknown";
  }
}

struct cluster_state {
  std::string connect;
  int timeout_ms = 5000;
  bool json = false;
  std::string agent, type, body;
  CLI::App* members = nullptr;
  CLI::App* raft = nullptr;
  CLI::App* ask = nullptr;
};

int cmd_members(const cluster_state& st, std::ostream& out, std::ostream& err) {
  auto client = remote_node::connect(st.connect);
  if (!client) return fail(err, client.error());
  auto r = (*client)->ask<v1::MembersReply>("af.cluster.members", v1::MembersRequest{},
                                            std::chrono::milliseconds(st.timeout_ms));
  if (!r) {
    err << "af: " << r.error().to_string()
        << (r.error().code() == errc::not_found ? " (is the node started with --cluster-listen?)"
                                                : "")
        << "\n";
    return k_exit_failure;
  }
  if (st.json) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : r->members())
      members.push_back({{"node", m.node()},
                         {"endpoint", m.endpoint()},
                         {"state", state_name(m.state())},
                         {"incarnation", m.incarnation()}});
    out << nlohmann::json{{"self", r->self()},
                          {"view_version", r->view_version()},
                          {"members", members}}
               .dump()
        << "\n";
    return k_exit_ok;
  }
  out << "members seen by " << r->self() << " (view " << r->view_version() << "):\n";
  out << std::left << std::setw(24) << "NODE" << std::setw(24) << "ENDPOINT" << std::setw(10)
      << "STATE"
      << "INCARNATION\n";
  for (const auto& m : r->members())
    out << std::left << std::setw(24) << m.node() << std::setw(24)
        << (m.endpoint().empty() ? "-" : m.endpoint()) << std::setw(10) << state_name(m.state())
        << m.incarnation() << "\n";
  return k_exit_ok;
}

int cmd_raft(const cluster_state& st, std::ostream& out, std::ostream& err) {
  auto client = remote_node::connect(st.connect);
  if (!client) return fail(err, client.error());
  auto r = (*client)->ask<v1::RaftStatus>("af.cluster.raft", v1::RaftStatusRequest{},
                                          std::chrono::milliseconds(st.timeout_ms));
  if (!r) {
    err << "af: " << r.error().to_string()
        << (r.error().code() == errc::not_found
                ? " (is the node started with --cluster-listen and cluster.raft.members?)"
                : "")
        << "\n";
    return k_exit_failure;
  }
  if (st.json) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : r->members())
      members.push_back({{"node", m.node()},
                         {"voter", m.voter()},
                         {"match_index", m.match_index()},
                         {"self", m.self()}});
    out << nlohmann::json{{"node", r->node()},
                          {"group", r->group()},
                          {"term", r->term()},
                          {"role", r->role()},
                          {"leader", r->leader()},
                          {"commit_index", r->commit_index()},
                          {"applied_index", r->applied_index()},
                          {"last_index", r->last_index()},
                          {"snapshot_index", r->snapshot_index()},
                          {"keys", r->keys()},
                          {"leases", r->leases()},
                          {"members", members}}
               .dump()
        << "\n";
    return k_exit_ok;
  }
  out << "raft group " << r->group() << " on " << r->node() << ": " << r->role() << ", term "
      << r->term() << ", leader " << (r->leader().empty() ? "unknown" : r->leader()) << "\n";
  out << "log: commit " << r->commit_index() << ", applied " << r->applied_index() << ", last "
      << r->last_index() << ", snapshot " << r->snapshot_index() << "; metadata: " << r->keys()
      << " keys, " << r->leases() << " leases held\n";
  out << std::left << std::setw(24) << "MEMBER" << std::setw(8) << "VOTER"
      << "MATCH INDEX\n";
  for (const auto& m : r->members())
    out << std::left << std::setw(24) << (m.node() + (m.self() ? " *" : "")) << std::setw(8)
        << (m.voter() ? "yes" : "no")
        << (r->role() == "leader" ? std::to_string(m.match_index()) : std::string{"-"}) << "\n";
  return k_exit_ok;
}

/// A message of the generated type `type` (any type linked into `af`) from Protobuf JSON.
expected<std::shared_ptr<const pb::Message>> message_from_json(const std::string& type,
                                                               const std::string& body) {
  const auto* desc = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(type);
  if (desc == nullptr)
    return not_found_error("af ask: unknown message type '" + type
                           + "' (a full Protobuf name such as af.v1.NodeStatusRequest)");
  const auto* proto = pb::MessageFactory::generated_factory()->GetPrototype(desc);
  if (proto == nullptr) return not_found_error("af ask: no generated code for '" + type + "'");
  std::shared_ptr<pb::Message> msg{proto->New()};
  auto s = pb::util::JsonStringToMessage(body.empty() ? std::string{"{}"} : body, msg.get());
  if (!s.ok())
    return validation_error("af ask: the payload is not a valid " + type
                            + " in JSON: " + std::string{s.message()});
  return std::shared_ptr<const pb::Message>{std::move(msg)};
}

int cmd_ask(const cluster_state& st, std::ostream& out, std::ostream& err) {
  auto msg = message_from_json(st.type, st.body);
  if (!msg) return fail(err, msg.error());
  auto client = remote_node::connect(st.connect);
  if (!client) return fail(err, client.error());
  auto r = (*client)->ask_erased(st.agent, *msg, std::chrono::milliseconds(st.timeout_ms));
  if (!r) {
    err << "af: " << r.error().to_string() << "\n";
    return k_exit_failure;
  }
  error remote_err{errc::internal, {}};
  if (af::detail::error_from_envelope(*r, remote_err)) {
    err << "af: " << remote_err.to_string() << "\n";
    return k_exit_failure;
  }
  std::string text;
  pb::util::JsonPrintOptions po;
  po.always_print_primitive_fields = true;
  po.preserve_proto_field_names = true;
  (void)pb::util::MessageToJsonString(r->payload(), &text, po);
  if (st.json)
    out << nlohmann::json{{"type", r->payload_type_name()},
                          {"from", r->sender().to_string()},
                          {"payload", nlohmann::json::parse(text, nullptr, false)}}
               .dump()
        << "\n";
  else
    out << r->payload_type_name() << " from " << r->sender().to_string() << ": " << text << "\n";
  return k_exit_ok;
}

/// --connect (required), --json and --timeout-ms, shared by every command here.
void add_query_options(CLI::App& cmd, cluster_state& st, const char* json_help) {
  cmd.add_option("--connect", st.connect, "a node's control endpoint HOST:PORT")->required();
  cmd.add_flag("--json", st.json, json_help);
  cmd.add_option("--timeout-ms", st.timeout_ms, "how long to wait for the reply")
      ->check(CLI::Range(1, 3'600'000));
}

} // namespace

runner add_cluster_commands(CLI::App& app, std::ostream& out, std::ostream& err) {
  auto st = std::make_shared<cluster_state>();
  auto* cluster = app.add_subcommand("cluster", "query a running cluster");
  cluster->require_subcommand(1);
  st->members = cluster->add_subcommand(
      "members", "print the members a node sees: name, endpoint, state (alive, suspect, dead,\n"
                 "left) and incarnation\n\nExample:\n"
                 "  af cluster members --connect 127.0.0.1:7400 --json");
  add_query_options(*st->members, *st, "print JSON");

  st->raft = cluster->add_subcommand(
      "raft", "print the state of a node's Raft member (cluster metadata): term, role, leader,\n"
              "commit and applied index, log and snapshot, members\n\nExample:\n"
              "  af cluster raft --connect 127.0.0.1:7400 --json");
  add_query_options(*st->raft, *st, "print JSON");

  st->ask = app.add_subcommand(
      "ask", "ask an agent of a running node (or a virtual agent Kind/id, wherever the cluster\n"
             "places it) with a Protobuf message given as JSON; prints the reply\n\nExample:\n"
             "  af ask --connect 127.0.0.1:7400 counter/42 af.v1.CounterAdd '{\"amount\": 1}'\n"
             "  af ask --connect 127.0.0.1:7400 af.control af.v1.NodeStatusRequest --json");
  st->ask->add_option("agent", st->agent, "the agent's name, or Kind/id for a virtual agent")
      ->required();
  st->ask->add_option("type", st->type, "the message's full Protobuf type name")->required();
  st->ask->add_option("payload", st->body, "the message as Protobuf JSON (default {})");
  add_query_options(*st->ask, *st, "print the reply as JSON");

  return [st, &out, &err]() -> std::optional<int> {
    if (st->members->parsed()) return cmd_members(*st, out, err);
    if (st->raft->parsed()) return cmd_raft(*st, out, err);
    if (st->ask->parsed()) return cmd_ask(*st, out, err);
    return std::nullopt;
  };
}

} // namespace af::cli::detail
