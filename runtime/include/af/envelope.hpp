// af::envelope: the immutable, typed envelope every message travels in, with its canonical
// serialization, SHA-256 hash, and validating wire decoder (docs/architecture.md documents the
// canonical form byte by byte).
#pragma once

#include "af/error.hpp"
#include "af/hash.hpp"
#include "af/ulid.hpp"

#include <google/protobuf/message.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace af {

namespace v1 {
class Envelope;
} // namespace v1

/// Where an agent lives: the node's name and the agent's registered name on that node.
struct address {
  std::string node;
  std::string name;
  [[nodiscard]] std::string to_string() const { return node + "/" + name; }
  friend bool operator==(const address&, const address&) = default;
};

/// W3C trace context. An all-zero parent span id means "root span".
struct trace_context {
  std::array<std::uint8_t, 16> trace_id{};
  std::array<std::uint8_t, 8> span_id{};
  std::array<std::uint8_t, 8> parent_span_id{};
  std::uint8_t flags = 0;

  [[nodiscard]] std::string trace_id_hex() const { return to_hex(trace_id); }
  [[nodiscard]] std::string span_id_hex() const { return to_hex(span_id); }
  /// "00-<trace id>-<span id>-<flags>" as in the W3C traceparent header.
  [[nodiscard]] std::string traceparent() const;
  friend bool operator==(const trace_context&, const trace_context&) = default;
};

/// The fields of an envelope, set in any order before `envelope::make` freezes them.
/// Nil ULIDs mean "absent" for correlation and causation ids.
struct envelope_fields {
  ulid message_id;
  std::string tenant;
  trace_context trace;
  ulid correlation_id;
  ulid causation_id;
  address sender;
  address receiver;
  /// The payload; its Protobuf type is the envelope's payload type. Required.
  std::shared_ptr<const google::protobuf::Message> payload;
  std::uint64_t logical_ts = 0;
  std::map<std::string, std::string> headers;
};

/// Limits applied when decoding envelopes from untrusted bytes.
struct decode_options {
  /// Largest accepted payload (config key envelope.max_payload_bytes).
  std::size_t max_payload_bytes = 4 * 1024 * 1024;
  /// Bytes allowed on top of the payload for ids, addresses and headers.
  std::size_t max_header_bytes = 64 * 1024;
  /// Reject envelopes that carry no hash. On by default: the hash is the last field on the wire,
  /// so without it an envelope cut just before the hash would pass as whole.
  bool require_hash = true;
};

namespace detail {
struct envelope_rep;
} // namespace detail

/// An immutable envelope, cheap to copy (a shared handle). Payload bytes and the hash are
/// computed on first use and cached; both are thread-safe.
class envelope {
public:
  envelope() = default;

  /// Freezes `f` into an envelope. The payload must be set.
  [[nodiscard]] static envelope make(envelope_fields f);

  /// Decodes wire bytes (an af.v1.Envelope) and validates them: sizes, ids, payload type (must be
  /// a Protobuf message linked into this process), payload parse, and the hash when present.
  /// Every failure is a `validation` error naming the field at fault.
  [[nodiscard]] static expected<envelope> decode(std::string_view wire,
                                                 const decode_options& opt = {});

  [[nodiscard]] bool valid() const noexcept { return rep_ != nullptr; }
  [[nodiscard]] const envelope_fields& fields() const;

  [[nodiscard]] const ulid& message_id() const { return fields().message_id; }
  [[nodiscard]] const std::string& tenant() const { return fields().tenant; }
  [[nodiscard]] const trace_context& trace() const { return fields().trace; }
  [[nodiscard]] const ulid& correlation_id() const { return fields().correlation_id; }
  [[nodiscard]] const ulid& causation_id() const { return fields().causation_id; }
  [[nodiscard]] const address& sender() const { return fields().sender; }
  [[nodiscard]] const address& receiver() const { return fields().receiver; }
  [[nodiscard]] std::uint64_t logical_ts() const { return fields().logical_ts; }
  [[nodiscard]] const std::map<std::string, std::string>& headers() const {
    return fields().headers;
  }

  [[nodiscard]] const google::protobuf::Message& payload() const { return *fields().payload; }
  [[nodiscard]] const google::protobuf::Descriptor* payload_type() const {
    return fields().payload->GetDescriptor();
  }
  [[nodiscard]] const std::string& payload_type_name() const;
  /// The payload as T, or nullptr when the payload has another type.
  template <class T>
  [[nodiscard]] const T* payload_as() const {
    return payload_type() == T::descriptor() ? static_cast<const T*>(&payload()) : nullptr;
  }

  /// Deterministic Protobuf serialization of the payload (or the bytes received on the wire).
  [[nodiscard]] const std::string& payload_bytes() const;
  /// SHA-256 over `canonical()`.
  [[nodiscard]] const digest& hash() const;
  [[nodiscard]] std::string hash_hex() const { return to_hex(hash()); }
  /// The canonical serialization the hash covers (hash field excluded, headers sorted).
  [[nodiscard]] std::string canonical() const;

  /// The wire form: an af.v1.Envelope with the hash set.
  [[nodiscard]] std::string encode() const;
  void to_proto(v1::Envelope& out) const;

  /// Same envelope (same handle or same hash).
  friend bool operator==(const envelope& a, const envelope& b);

private:
  explicit envelope(std::shared_ptr<const detail::envelope_rep> rep) : rep_(std::move(rep)) {}
  std::shared_ptr<const detail::envelope_rep> rep_;
};

/// Appends the canonical form of `f` with `payload_bytes` to `out` (exposed for tests and tools).
void append_canonical(const envelope_fields& f, std::string_view payload_type,
                      std::string_view payload_bytes, std::string& out);

/// Looks up a Protobuf message type linked into this process by its full name.
[[nodiscard]] const google::protobuf::Message* find_prototype(std::string_view full_name);

} // namespace af
