// Private: the thin layer between AgentFlow and CAF 0.17 (CAF-NOTES.md): how an envelope is
// serialized by CAF, the typed actor interface every agent implements, and handle conversions.
// Only runtime/src includes this; a port to CAF 1.0 touches this file and the hosts.
#pragma once

#include "af/agent.hpp"
#include "af/envelope.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/execution_unit.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/sec.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <string>
#include <type_traits>

namespace af {

/// Counts and logs an envelope that failed to decode on the wire, on the node whose actor system
/// is running the deserializer (`ctx` may be null; a client's system has no node: then it only
/// returns). Defined in node.cpp.
void report_rejected_envelope(caf::execution_unit* ctx, const error& e) noexcept;

/// The decode limits of the node running the deserializer (its envelope.max_payload_bytes), or
/// the defaults outside a node. Defined in node.cpp.
decode_options wire_decode_options(caf::execution_unit* ctx) noexcept;

/// The one CAF interface of every AgentFlow actor: an envelope in, an envelope back for asks.
using envelope_actor = caf::typed_actor<caf::replies_to<envelope>::with<envelope>>;

/// CAF serialization of an envelope: its validated wire form (see envelope::encode/decode).
template <class Inspector>
typename std::enable_if<Inspector::reads_state, typename Inspector::result_type>::type
inspect(Inspector& f, envelope& x) {
  std::string bytes = x.valid() ? x.encode() : std::string{};
  return f(caf::meta::type_name("af.envelope"), bytes);
}

template <class Inspector>
typename std::enable_if<Inspector::writes_state, typename Inspector::result_type>::type
inspect(Inspector& f, envelope& x) {
  std::string bytes;
  auto load = caf::meta::load_callback([&]() -> caf::error {
    auto r = envelope::decode(bytes, wire_decode_options(f.context()));
    if (!r) {
      report_rejected_envelope(f.context(), r.error());
      return caf::make_error(caf::sec::invalid_argument, r.error().to_string());
    }
    x = std::move(*r);
    return caf::none;
  });
  return f(caf::meta::type_name("af.envelope"), bytes, load);
}

/// The af::error for a failed CAF request to `target` (an ask's timeout, a stopped receiver, a
/// broken connection), worded the same wherever an ask is made.
inline error ask_error(const caf::error& err, const std::string& target, duration timeout) {
  if (err == caf::sec::request_timeout)
    return {
        errc::timeout,
        "ask to '" + target + "' timed out after "
            + std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())
            + " ms"};
  if (err == caf::sec::request_receiver_down)
    return {errc::not_found, "ask to '" + target + "' failed: the agent has stopped"};
  return {errc::transient, "ask to '" + target + "' failed: " + to_string(err)};
}

inline envelope_actor to_actor(const agent_ref& ref) {
  return caf::actor_cast<envelope_actor>(ref.ctrl());
}

inline caf::actor_control_block* ctrl_of(const envelope_actor& a) {
  return caf::actor_cast<caf::actor_control_block*>(a);
}

} // namespace af
