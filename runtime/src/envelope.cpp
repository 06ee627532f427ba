#include "af/envelope.hpp"

#include "af/v1/envelope.pb.h"

#include <google/protobuf/arena.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/stubs/logging.h>

#include <atomic>
#include <cassert>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace af {

namespace detail {

/// Runs a computation once, for whichever thread needs its result first. Not std::call_once:
/// glibc's once ends with a futex wake system call every time, which cost an eighth of the
/// simulator's time per message (docs/benchmarks.md, section 9).
class lazy_once {
public:
  template <class F>
  void call(F&& f) const {
    if (state_.load(std::memory_order_acquire) == k_done) return;
    std::uint8_t idle = k_idle;
    if (state_.compare_exchange_strong(idle, k_running, std::memory_order_acquire)) {
      try {
        f();
      } catch (...) {
        state_.store(k_idle, std::memory_order_release);
        throw;
      }
      state_.store(k_done, std::memory_order_release);
      return;
    }
    // Another thread is computing it (rare: an envelope is built on one thread): wait.
    while (state_.load(std::memory_order_acquire) != k_done)
      std::this_thread::yield();
  }

private:
  static constexpr std::uint8_t k_idle = 0, k_running = 1, k_done = 2;
  mutable std::atomic<std::uint8_t> state_{k_idle};
};

struct envelope_rep {
  envelope_fields f;
  bool bytes_preset = false;
  lazy_once bytes_once;
  mutable std::string bytes;
  lazy_once hash_once;
  mutable digest hash{};
};

} // namespace detail

namespace {

constexpr std::string_view k_magic = "AFE1";

/// Writes into a buffer sized in advance (one resize instead of ~40 small appends).
class canonical_writer {
public:
  explicit canonical_writer(char* p) : p_(p) {}
  void raw(std::string_view b) {
    std::memcpy(p_, b.data(), b.size());
    p_ += b.size();
  }
  void u32(std::uint32_t v) {
    p_[0] = static_cast<char>(v >> 24);
    p_[1] = static_cast<char>(v >> 16);
    p_[2] = static_cast<char>(v >> 8);
    p_[3] = static_cast<char>(v);
    p_ += 4;
  }
  void u64(std::uint64_t v) {
    u32(static_cast<std::uint32_t>(v >> 32));
    u32(static_cast<std::uint32_t>(v));
  }
  void tag(std::uint8_t t) { *p_++ = static_cast<char>(t); }
  void field(std::uint8_t t, std::string_view b) {
    tag(t);
    u32(static_cast<std::uint32_t>(b.size()));
    raw(b);
  }
  [[nodiscard]] const char* pos() const { return p_; }

private:
  char* p_;
};

template <std::size_t N>
std::string_view view(const std::array<std::uint8_t, N>& a) {
  return {reinterpret_cast<const char*>(a.data()), N};
}

std::string serialize_deterministic(const google::protobuf::Message& m) {
  std::string out;
  out.reserve(m.ByteSizeLong());
  google::protobuf::io::StringOutputStream zero_copy{&out};
  google::protobuf::io::CodedOutputStream coded{&zero_copy};
  coded.SetSerializationDeterministic(true);
  m.SerializeWithCachedSizes(&coded);
  return out;
}

template <std::size_t N>
bool copy_fixed(const std::string& in, std::array<std::uint8_t, N>& out, bool allow_empty) {
  if (in.empty() && allow_empty) {
    out.fill(0);
    return true;
  }
  if (in.size() != N) return false;
  for (std::size_t i = 0; i < N; ++i)
    out[i] = static_cast<std::uint8_t>(in[i]);
  return true;
}

std::string field_size_error(std::string_view field, std::size_t want, std::size_t got,
                             bool may_be_empty) {
  return "envelope." + std::string(field) + ": expected " + std::to_string(want) + " bytes"
         + (may_be_empty ? " or none" : "") + ", got " + std::to_string(got);
}

} // namespace

std::string trace_context::traceparent() const {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out = "00-" + trace_id_hex() + "-" + span_id_hex() + "-";
  out.push_back(k_digits[flags >> 4]);
  out.push_back(k_digits[flags & 15]);
  return out;
}

void append_canonical(const envelope_fields& f, std::string_view payload_type,
                      std::string_view payload_bytes, std::string& out) {
  // Fixed part: magic, 16 tags, 13 length prefixes, ids (3 x 16), span ids (2 x 8), trace id
  // (16), flags (4), logical_ts (8), header count (4).
  std::size_t size = k_magic.size() + 16 + 13 * 4 + 3 * 16 + 2 * 8 + 16 + 4 + 8 + 4;
  size += f.tenant.size() + f.sender.node.size() + f.sender.name.size() + f.receiver.node.size()
          + f.receiver.name.size() + payload_type.size() + payload_bytes.size();
  for (const auto& [key, value] : f.headers)
    size += 8 + key.size() + value.size();
  const std::size_t start = out.size();
  out.resize(start + size);
  canonical_writer w{out.data() + start};
  w.raw(k_magic);
  w.field(1, f.message_id.raw());
  w.field(2, f.tenant);
  w.field(3, view(f.trace.trace_id));
  w.field(4, view(f.trace.span_id));
  w.field(5, view(f.trace.parent_span_id));
  w.tag(6);
  w.u32(f.trace.flags);
  w.field(7, f.correlation_id.raw());
  w.field(8, f.causation_id.raw());
  w.field(9, f.sender.node);
  w.field(10, f.sender.name);
  w.field(11, f.receiver.node);
  w.field(12, f.receiver.name);
  w.field(13, payload_type);
  w.field(14, payload_bytes);
  w.tag(15);
  w.u64(f.logical_ts);
  w.tag(16);
  w.u32(static_cast<std::uint32_t>(f.headers.size()));
  for (const auto& [key, value] : f.headers) { // std::map: sorted by key, bytewise
    w.u32(static_cast<std::uint32_t>(key.size()));
    w.raw(key);
    w.u32(static_cast<std::uint32_t>(value.size()));
    w.raw(value);
  }
  assert(w.pos() == out.data() + out.size());
}

namespace {
struct name_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
} // namespace

const google::protobuf::Message* find_prototype(std::string_view full_name) {
  // Every decoded envelope looks its payload type up: a pool lookup builds a string and takes the
  // pool's lock. Found prototypes never change, so each thread keeps them; misses are not kept
  // (a plugin loaded later may link the type).
  thread_local std::unordered_map<std::string, const google::protobuf::Message*, name_hash,
                                  std::equal_to<>>
      cache;
  if (auto it = cache.find(full_name); it != cache.end()) return it->second;
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* desc = pool->FindMessageTypeByName(std::string{full_name});
  if (desc == nullptr) return nullptr;
  const auto* proto = google::protobuf::MessageFactory::generated_factory()->GetPrototype(desc);
  if (proto != nullptr && cache.size() < 4096) cache.emplace(std::string{full_name}, proto);
  return proto;
}

envelope envelope::make(envelope_fields f) {
  auto rep = std::make_shared<detail::envelope_rep>();
  rep->f = std::move(f);
  return envelope{std::move(rep)};
}

const envelope_fields& envelope::fields() const {
  assert(rep_ != nullptr);
  return rep_->f;
}

const std::string& envelope::payload_type_name() const { return payload_type()->full_name(); }

const std::string& envelope::payload_bytes() const {
  const auto& rep = *rep_;
  if (!rep.bytes_preset)
    rep.bytes_once.call([&rep] { rep.bytes = serialize_deterministic(*rep.f.payload); });
  return rep.bytes;
}

std::string envelope::canonical() const {
  std::string out;
  const auto& bytes = payload_bytes();
  out.reserve(160 + bytes.size());
  append_canonical(rep_->f, payload_type_name(), bytes, out);
  return out;
}

const digest& envelope::hash() const {
  const auto& rep = *rep_;
  rep.hash_once.call([this, &rep] {
    thread_local std::string buf;
    buf.clear();
    append_canonical(rep.f, payload_type_name(), payload_bytes(), buf);
    rep.hash = sha256(buf);
  });
  return rep.hash;
}

void envelope::to_proto(v1::Envelope& out) const {
  const auto& f = fields();
  out.Clear();
  out.set_message_id(std::string{f.message_id.raw()});
  out.set_tenant(f.tenant);
  auto* tc = out.mutable_trace();
  tc->set_trace_id(std::string{view(f.trace.trace_id)});
  tc->set_span_id(std::string{view(f.trace.span_id)});
  if (f.trace.parent_span_id != decltype(f.trace.parent_span_id){})
    tc->set_parent_span_id(std::string{view(f.trace.parent_span_id)});
  tc->set_flags(f.trace.flags);
  if (!f.correlation_id.is_nil()) out.set_correlation_id(std::string{f.correlation_id.raw()});
  if (!f.causation_id.is_nil()) out.set_causation_id(std::string{f.causation_id.raw()});
  out.mutable_sender()->set_node(f.sender.node);
  out.mutable_sender()->set_name(f.sender.name);
  out.mutable_receiver()->set_node(f.receiver.node);
  out.mutable_receiver()->set_name(f.receiver.name);
  out.set_payload_type(payload_type_name());
  out.set_payload(payload_bytes());
  out.set_logical_ts(f.logical_ts);
  for (const auto& [k, v] : f.headers)
    (*out.mutable_headers())[k] = v;
  const auto& h = hash();
  out.set_hash(std::string{view(h)});
}

namespace {

// Protobuf's wire encoding, for the direct writer in envelope::encode.
std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7)
    ++n;
  return n;
}

void put_varint(std::string& out, std::uint64_t v) {
  for (; v >= 0x80; v >>= 7)
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
  out.push_back(static_cast<char>(v));
}

/// Bytes a length-delimited field (tag below 16) of `n` bytes takes.
std::size_t field_size(std::size_t n) { return 1 + varint_size(n) + n; }

void put_field(std::string& out, std::uint32_t number, std::string_view b) {
  out.push_back(static_cast<char>((number << 3) | 2));
  put_varint(out, b.size());
  out.append(b);
}

/// A proto3 string/bytes field: omitted when empty.
std::size_t opt_field_size(std::string_view b) { return b.empty() ? 0 : field_size(b.size()); }
void put_opt_field(std::string& out, std::uint32_t number, std::string_view b) {
  if (!b.empty()) put_field(out, number, b);
}

std::size_t address_size(const address& a) {
  return opt_field_size(a.node) + opt_field_size(a.name);
}

} // namespace

std::string envelope::encode() const {
  const auto& f = fields();
  if (!f.headers.empty()) {
    v1::Envelope pb;
    to_proto(pb);
    return serialize_deterministic(pb);
  }
  // Without headers (the common case) the bytes are written directly: the same bytes as
  // to_proto + deterministic serialization (fields in number order, proto3 defaults omitted,
  // sub-messages always present as to_proto sets them; tests/runtime/envelope_test.cpp checks it)
  // without building an af.v1.Envelope (a dozen string copies and allocations per envelope).
  const auto& type = payload_type_name();
  const auto& payload = payload_bytes();
  const auto& h = hash();
  const bool parent = f.trace.parent_span_id != decltype(f.trace.parent_span_id){};
  const std::size_t trace_size = field_size(16) + field_size(8) + (parent ? field_size(8) : 0)
                                 + (f.trace.flags != 0 ? 1 + varint_size(f.trace.flags) : 0);
  const std::size_t sender_size = address_size(f.sender);
  const std::size_t receiver_size = address_size(f.receiver);
  const std::size_t total =
      field_size(16) + opt_field_size(f.tenant) + field_size(trace_size)
      + (f.correlation_id.is_nil() ? 0 : field_size(16))
      + (f.causation_id.is_nil() ? 0 : field_size(16)) + field_size(sender_size)
      + field_size(receiver_size) + opt_field_size(type) + opt_field_size(payload)
      + (f.logical_ts != 0 ? 1 + varint_size(f.logical_ts) : 0) + field_size(h.size());
  std::string out;
  out.reserve(total);
  put_field(out, 1, f.message_id.raw());
  put_opt_field(out, 2, f.tenant);
  out.push_back(static_cast<char>((3 << 3) | 2));
  put_varint(out, trace_size);
  put_field(out, 1, view(f.trace.trace_id));
  put_field(out, 2, view(f.trace.span_id));
  if (parent) put_field(out, 3, view(f.trace.parent_span_id));
  if (f.trace.flags != 0) {
    out.push_back(static_cast<char>(4 << 3));
    put_varint(out, f.trace.flags);
  }
  if (!f.correlation_id.is_nil()) put_field(out, 4, f.correlation_id.raw());
  if (!f.causation_id.is_nil()) put_field(out, 5, f.causation_id.raw());
  for (auto [number, a, size] :
       {std::tuple{6u, &f.sender, sender_size}, std::tuple{7u, &f.receiver, receiver_size}}) {
    out.push_back(static_cast<char>((number << 3) | 2));
    put_varint(out, size);
    put_opt_field(out, 1, a->node);
    put_opt_field(out, 2, a->name);
  }
  put_opt_field(out, 8, type);
  put_opt_field(out, 9, payload);
  if (f.logical_ts != 0) {
    out.push_back(static_cast<char>(10 << 3));
    put_varint(out, f.logical_ts);
  }
  put_field(out, 12, view(h));
  assert(out.size() == total);
  return out;
}

expected<envelope> envelope::decode(std::string_view wire, const decode_options& opt) {
  // Hostile input must not write Protobuf's own log lines (e.g. "invalid UTF-8") to stderr:
  // the validation error below says what was wrong.
  static std::once_flag quiet;
  std::call_once(quiet, [] {
    google::protobuf::SetLogHandler(
        [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  });
  const std::size_t limit = opt.max_payload_bytes + opt.max_header_bytes;
  if (wire.size() > limit)
    return validation_error("envelope: " + std::to_string(wire.size())
                            + " bytes exceeds the limit of " + std::to_string(limit)
                            + " (envelope.max_payload_bytes + header allowance)");
  if (wire.empty()) return validation_error("envelope: empty input");
  // The wire message is parsed into an arena that starts in this thread's scratch block: its
  // strings and sub-messages are not allocated and freed one by one (the fields are copied out).
  alignas(8) thread_local char scratch[4096];
  google::protobuf::ArenaOptions arena_opts;
  arena_opts.initial_block = scratch;
  arena_opts.initial_block_size = sizeof(scratch);
  google::protobuf::Arena arena{arena_opts};
  auto& pb = *google::protobuf::Arena::CreateMessage<v1::Envelope>(&arena);
  if (!pb.ParseFromArray(wire.data(), static_cast<int>(wire.size())))
    return validation_error("envelope: truncated or malformed Protobuf encoding ("
                            + std::to_string(wire.size()) + " bytes)");

  auto rep = std::make_shared<detail::envelope_rep>();
  auto& f = rep->f;
  if (pb.message_id().size() != 16)
    return validation_error(field_size_error("message_id", 16, pb.message_id().size(), false));
  f.message_id = *ulid::from_bytes(pb.message_id());
  for (auto [name, value, target] :
       {std::tuple{"correlation_id", &pb.correlation_id(), &f.correlation_id},
        std::tuple{"causation_id", &pb.causation_id(), &f.causation_id}}) {
    if (value->empty()) continue;
    auto id = ulid::from_bytes(*value);
    if (!id) return validation_error(field_size_error(name, 16, value->size(), true));
    *target = *id;
  }
  f.tenant = pb.tenant();
  const auto& tc = pb.trace();
  if (!copy_fixed(tc.trace_id(), f.trace.trace_id, false))
    return validation_error(field_size_error("trace.trace_id", 16, tc.trace_id().size(), false));
  if (!copy_fixed(tc.span_id(), f.trace.span_id, false))
    return validation_error(field_size_error("trace.span_id", 8, tc.span_id().size(), false));
  if (!copy_fixed(tc.parent_span_id(), f.trace.parent_span_id, true))
    return validation_error(
        field_size_error("trace.parent_span_id", 8, tc.parent_span_id().size(), true));
  if (tc.flags() > 0xff)
    return validation_error("envelope.trace.flags: " + std::to_string(tc.flags())
                            + " does not fit in 8 bits");
  f.trace.flags = static_cast<std::uint8_t>(tc.flags());
  f.sender = {pb.sender().node(), pb.sender().name()};
  f.receiver = {pb.receiver().node(), pb.receiver().name()};
  f.logical_ts = pb.logical_ts();
  for (const auto& [k, v] : pb.headers())
    f.headers.emplace(k, v);

  if (pb.payload_type().empty()) return validation_error("envelope.payload_type: empty");
  if (pb.payload().size() > opt.max_payload_bytes)
    return validation_error("envelope.payload: " + std::to_string(pb.payload().size())
                            + " bytes exceeds the limit of " + std::to_string(opt.max_payload_bytes)
                            + " bytes (envelope.max_payload_bytes)");
  const auto* proto = find_prototype(pb.payload_type());
  if (proto == nullptr)
    return validation_error("envelope.payload_type: unknown payload type '" + pb.payload_type()
                            + "' (no such Protobuf message is linked into this process)");
  std::shared_ptr<google::protobuf::Message> payload{proto->New()};
  if (!payload->ParseFromString(pb.payload()))
    return validation_error("envelope.payload: malformed '" + pb.payload_type() + "' ("
                            + std::to_string(pb.payload().size()) + " bytes)");
  f.payload = std::move(payload);
  rep->bytes = std::move(*pb.mutable_payload());
  rep->bytes_preset = true;

  envelope result{std::move(rep)};
  if (pb.hash().empty()) {
    if (opt.require_hash) return validation_error("envelope.hash: missing");
  } else if (pb.hash().size() != 32) {
    return validation_error(field_size_error("hash", 32, pb.hash().size(), false));
  } else if (pb.hash() != view(result.hash())) {
    return validation_error("envelope.hash: mismatch: carried " + to_hex(pb.hash()) + ", computed "
                            + result.hash_hex());
  }
  return result;
}

bool operator==(const envelope& a, const envelope& b) {
  if (a.rep_ == b.rep_) return true;
  if (!a.rep_ || !b.rep_) return false;
  return a.hash() == b.hash();
}

} // namespace af
