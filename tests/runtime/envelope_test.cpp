// Typed envelopes: canonical hash properties (seeded generators), wire round trips, and the
// validating decoder's answers to truncated, garbage, oversized and unknown-type input.
#include "af/envelope.hpp"
#include "af/services.hpp"
#include "af/v1/envelope.pb.h"
#include "af/v1/runtime.pb.h"

#include <catch2/catch.hpp>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <unordered_set>

using namespace af;

namespace {

/// Random bytes: for untrusted input.
std::string random_bytes_string(rng& r, std::size_t max_len) {
  std::string s(r.uniform(max_len + 1), '\0');
  for (auto& c : s)
    c = static_cast<char>(r.uniform(256));
  return s;
}

/// Random valid UTF-8 (ASCII plus two-byte sequences): Protobuf string fields require UTF-8.
std::string random_string(rng& r, std::size_t max_len) {
  std::string s;
  for (auto n = r.uniform(max_len + 1); n > 0; --n) {
    if (r.uniform(8) == 0) {
      auto cp = 0x80 + r.uniform(0x780); // U+0080..U+07FF
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0x20 + r.uniform(0x5F)));
    }
  }
  return s;
}

/// Map entries with distinct keys (a map cannot hold two values for one key).
std::vector<std::pair<std::string, std::string>> random_entries(rng& r) {
  std::map<std::string, std::string> m;
  for (auto n = r.uniform(5); n > 0; --n)
    m.emplace(random_string(r, 6), random_string(r, 10));
  return {m.begin(), m.end()};
}

template <std::size_t N>
std::array<std::uint8_t, N> random_bytes(rng& r) {
  std::array<std::uint8_t, N> a{};
  for (auto& b : a)
    b = static_cast<std::uint8_t>(r.uniform(256));
  return a;
}

ulid random_ulid(rng& r) { return ulid{random_bytes<16>(r)}; }

/// A description of an envelope that can be applied to envelope_fields in any order.
struct spec {
  ulid id, corr, cause;
  std::string tenant;
  trace_context trace;
  address from, to;
  std::uint64_t ts = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::pair<std::string, std::string>> features; // payload map entries
  std::string payload_name;
};

spec random_spec(rng& r) {
  spec s;
  s.id = random_ulid(r);
  s.corr = r.uniform(2) ? random_ulid(r) : ulid{};
  s.cause = r.uniform(2) ? random_ulid(r) : ulid{};
  s.tenant = random_string(r, 12);
  s.trace.trace_id = random_bytes<16>(r);
  s.trace.span_id = random_bytes<8>(r);
  if (r.uniform(2)) s.trace.parent_span_id = random_bytes<8>(r);
  s.trace.flags = static_cast<std::uint8_t>(r.uniform(256));
  s.from = {random_string(r, 8), random_string(r, 16)};
  s.to = {random_string(r, 8), random_string(r, 16)};
  s.ts = r.next_u64();
  s.headers = random_entries(r);
  s.features = random_entries(r);
  s.payload_name = random_string(r, 20);
  return s;
}

/// Builds the envelope, setting fields and map entries in an order chosen by `order_seed`.
envelope build(const spec& s, std::uint64_t order_seed) {
  rng order{order_seed};
  envelope_fields f;
  auto payload = std::make_shared<v1::NodeStatus>();
  auto headers = s.headers;
  auto features = s.features;
  std::shuffle(headers.begin(), headers.end(), order);
  std::shuffle(features.begin(), features.end(), order);
  std::vector<std::function<void()>> steps = {
      [&] { f.message_id = s.id; },
      [&] { f.correlation_id = s.corr; },
      [&] { f.causation_id = s.cause; },
      [&] { f.tenant = s.tenant; },
      [&] { f.trace = s.trace; },
      [&] { f.sender = s.from; },
      [&] { f.receiver = s.to; },
      [&] { f.logical_ts = s.ts; },
      [&] {
        for (auto& [k, v] : headers)
          f.headers.emplace(k, v); // first insertion wins, as in any map
      },
      [&] {
        for (auto& [k, v] : features)
          payload->mutable_features()->insert({k, v});
      },
      [&] { payload->set_name(s.payload_name); },
  };
  std::shuffle(steps.begin(), steps.end(), order);
  for (auto& step : steps)
    step();
  f.payload = payload;
  return envelope::make(std::move(f));
}

envelope simple(std::string name = "n") {
  envelope_fields f;
  f.message_id = ulid::from_parts(1700000000000, 1, 2);
  f.tenant = "acme";
  f.trace.trace_id[0] = 1;
  f.trace.span_id[0] = 2;
  f.sender = {"node-a", "alice"};
  f.receiver = {"node-b", "bob"};
  auto p = std::make_shared<v1::NodeStatus>();
  p->set_name(std::move(name));
  f.payload = p;
  f.logical_ts = 7;
  return envelope::make(std::move(f));
}

} // namespace

TEST_CASE("envelope hash does not depend on the order fields and map entries are set",
          "[envelope][property]") {
  rng r{42};
  for (int i = 0; i < 2000; ++i) {
    auto s = random_spec(r);
    auto a = build(s, r.next_u64());
    auto b = build(s, r.next_u64());
    REQUIRE(a.hash() == b.hash());
    REQUIRE(a.canonical() == b.canonical());
  }
}

TEST_CASE("changing any one field changes the envelope hash", "[envelope][property]") {
  rng r{7};
  for (int i = 0; i < 300; ++i) {
    const auto base = random_spec(r);
    const auto h = build(base, 1).hash();
    std::vector<std::function<void(spec&)>> mutations = {
        [&](spec& s) { s.id = ulid::from_parts(s.id.unix_ms() + 1, 0, 0); },
        [&](spec& s) { s.corr = random_ulid(r); },
        [&](spec& s) { s.cause = random_ulid(r); },
        [&](spec& s) { s.tenant += "x"; },
        [&](spec& s) { s.trace.trace_id[r.uniform(16)] ^= 1; },
        [&](spec& s) { s.trace.span_id[r.uniform(8)] ^= 1; },
        [&](spec& s) { s.trace.parent_span_id[r.uniform(8)] ^= 1; },
        [&](spec& s) { s.trace.flags ^= 1; },
        [&](spec& s) { s.from.node += "x"; },
        [&](spec& s) { s.from.name += "x"; },
        [&](spec& s) { s.to.node += "x"; },
        [&](spec& s) { s.to.name += "x"; },
        [&](spec& s) { s.ts ^= 1; },
        [&](spec& s) { s.headers.emplace_back("\x01new-header", "v"); },
        [&](spec& s) { s.payload_name += "x"; },
        [&](spec& s) { s.features.emplace_back("\x01new-feature", "v"); },
    };
    for (std::size_t m = 0; m < mutations.size(); ++m) {
      auto changed = base;
      mutations[m](changed);
      INFO("mutation " << m);
      REQUIRE(build(changed, 1).hash() != h);
    }
  }
}

TEST_CASE("a field's bytes cannot slide into its neighbour without changing the hash",
          "[envelope]") {
  // Length prefixes keep ("ab","c") and ("a","bc") apart.
  spec a, b;
  a.from = {"ab", "c"};
  b.from = {"a", "bc"};
  REQUIRE(build(a, 1).hash() != build(b, 1).hash());
  spec c, d;
  c.headers = {{"k", "v1"}};
  d.headers = {{"kv", "1"}};
  REQUIRE(build(c, 1).hash() != build(d, 1).hash());
}

TEST_CASE("no hash collision over 100k random envelopes", "[envelope][property]") {
  rng r{2026};
  std::unordered_set<std::string> seen;
  seen.reserve(100'000);
  for (int i = 0; i < 100'000; ++i) {
    auto e = build(random_spec(r), 1);
    seen.insert(e.hash_hex());
  }
  REQUIRE(seen.size() == 100'000);
}

TEST_CASE("encode writes exactly Protobuf's deterministic encoding of to_proto", "[envelope]") {
  // encode() writes envelopes without headers directly; the bytes must not differ from the
  // Protobuf path (hashes, MACs and peers on older builds depend on them).
  rng r{4242};
  for (int i = 0; i < 2000; ++i) {
    auto s = random_spec(r);
    if (r.uniform(2)) s.headers.clear();
    if (r.uniform(4) == 0) s.ts = 0;
    if (r.uniform(4) == 0) s.trace.flags = 0;
    if (r.uniform(4) == 0) s.tenant.clear();
    if (r.uniform(4) == 0) s.from = {};
    if (r.uniform(4) == 0) s.to.name.clear();
    if (r.uniform(4) == 0) s.payload_name = random_string(r, 400);
    auto e = build(s, 1);
    v1::Envelope pb;
    e.to_proto(pb);
    std::string want;
    {
      google::protobuf::io::StringOutputStream zero_copy{&want};
      google::protobuf::io::CodedOutputStream coded{&zero_copy};
      coded.SetSerializationDeterministic(true);
      REQUIRE(pb.SerializeToCodedStream(&coded));
    }
    INFO("envelope " << i << ", " << s.headers.size() << " headers");
    REQUIRE(e.encode() == want);
  }
}

TEST_CASE("encode and decode round-trip every field and the hash", "[envelope]") {
  rng r{99};
  for (int i = 0; i < 500; ++i) {
    auto s = random_spec(r);
    auto e = build(s, 3);
    auto d = envelope::decode(e.encode());
    REQUIRE(d.has_value());
    CHECK(d->hash() == e.hash());
    CHECK(d->message_id() == e.message_id());
    CHECK(d->correlation_id() == e.correlation_id());
    CHECK(d->causation_id() == e.causation_id());
    CHECK(d->tenant() == e.tenant());
    CHECK(d->trace() == e.trace());
    CHECK(d->sender() == e.sender());
    CHECK(d->receiver() == e.receiver());
    CHECK(d->logical_ts() == e.logical_ts());
    CHECK(d->headers() == e.headers());
    REQUIRE(d->payload_as<v1::NodeStatus>() != nullptr);
    CHECK(d->payload_as<v1::NodeStatus>()->name() == s.payload_name);
  }
}

TEST_CASE("the canonical form is the documented byte layout", "[envelope]") {
  auto e = simple();
  auto c = e.canonical();
  REQUIRE(c.substr(0, 4) == "AFE1");
  REQUIRE(c[4] == 1);                                      // tag of message_id
  REQUIRE(c.substr(5, 4) == std::string("\0\0\0\x10", 4)); // length 16, big-endian
  REQUIRE(e.hash() == sha256(c));
  REQUIRE(e.trace().traceparent().size() == 55);
}

TEST_CASE("decoding rejects every truncation of a valid envelope", "[envelope][decode]") {
  auto wire = simple().encode();
  for (std::size_t len = 0; len < wire.size(); ++len) {
    auto d = envelope::decode(std::string_view{wire}.substr(0, len));
    INFO("prefix of " << len << " bytes");
    REQUIRE_FALSE(d.has_value());
    REQUIRE(d.error().code() == errc::validation);
    REQUIRE(d.error().message().starts_with("envelope"));
  }
}

TEST_CASE("decoding rejects garbage without crashing", "[envelope][decode]") {
  rng r{5};
  for (int i = 0; i < 20'000; ++i) {
    auto bytes = random_bytes_string(r, 200);
    auto d = envelope::decode(bytes);
    REQUIRE_FALSE(d.has_value());
    REQUIRE(d.error().code() == errc::validation);
  }
  // Flipping any single byte of a valid envelope is detected (hash or structure).
  auto wire = simple().encode();
  for (std::size_t i = 0; i < wire.size(); ++i) {
    auto copy = wire;
    copy[i] = static_cast<char>(copy[i] ^ 0x20);
    auto d = envelope::decode(copy);
    INFO("flipped byte " << i);
    REQUIRE_FALSE(d.has_value());
  }
}

TEST_CASE("decode errors name the field at fault", "[envelope][decode]") {
  v1::Envelope pb;
  simple().to_proto(pb);

  SECTION("unknown payload type") {
    pb.set_payload_type("acme.v9.NoSuchThing");
    auto d = envelope::decode(pb.SerializeAsString());
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message().find("unknown payload type 'acme.v9.NoSuchThing'")
            != std::string::npos);
  }
  SECTION("oversized payload, default limit 4 MiB") {
    v1::NodeStatus big;
    big.set_name(std::string(4 * 1024 * 1024 + 1, 'x'));
    pb.set_payload(big.SerializeAsString());
    auto d = envelope::decode(pb.SerializeAsString());
    REQUIRE_FALSE(d);
    REQUIRE(d.error().code() == errc::validation);
    REQUIRE(d.error().message().find("envelope.payload") != std::string::npos);
    REQUIRE(d.error().message().find("4194304") != std::string::npos);
  }
  SECTION("configurable payload limit") {
    decode_options opt;
    opt.max_payload_bytes = 2;
    auto d = envelope::decode(pb.SerializeAsString(), opt);
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message().find("envelope.max_payload_bytes") != std::string::npos);
  }
  SECTION("whole input over the limit is refused before parsing") {
    decode_options opt;
    opt.max_payload_bytes = 10;
    opt.max_header_bytes = 10;
    auto d = envelope::decode(pb.SerializeAsString(), opt);
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message().find("exceeds the limit of 20") != std::string::npos);
  }
  SECTION("malformed payload bytes") {
    pb.set_payload("\xff\xff\xff");
    auto d = envelope::decode(pb.SerializeAsString());
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message().find("envelope.payload: malformed 'af.v1.NodeStatus'")
            != std::string::npos);
  }
  SECTION("bad id length") {
    pb.set_message_id("short");
    auto d = envelope::decode(pb.SerializeAsString());
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message() == "envelope.message_id: expected 16 bytes, got 5");
  }
  SECTION("bad trace id length") {
    pb.mutable_trace()->set_trace_id("abc");
    auto d = envelope::decode(pb.SerializeAsString());
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message().find("envelope.trace.trace_id") != std::string::npos);
  }
  SECTION("tampered field is caught by the hash") {
    pb.set_tenant("evil");
    auto d = envelope::decode(pb.SerializeAsString());
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message().starts_with("envelope.hash: mismatch"));
  }
  SECTION("a missing hash is refused by default, or computed when allowed") {
    pb.clear_hash();
    auto bytes = pb.SerializeAsString();
    auto d = envelope::decode(bytes);
    REQUIRE_FALSE(d);
    REQUIRE(d.error().message() == "envelope.hash: missing");
    decode_options lenient;
    lenient.require_hash = false;
    auto c = envelope::decode(bytes, lenient);
    REQUIRE(c);
    REQUIRE(c->hash() == simple().hash());
  }
}

TEST_CASE("ULIDs are sortable text and monotonic within a generator", "[ulid]") {
  auto clk =
      std::make_shared<manual_clock>(time_point{std::chrono::milliseconds(1'700'000'000'000)});
  id_generator gen{clk, 1};
  ulid prev = gen.next();
  for (int i = 0; i < 100'000; ++i) {
    if (i % 1000 == 0) clk->advance(std::chrono::milliseconds(1));
    if (i == 50'000) clk->set(time_point{std::chrono::milliseconds(1'600'000'000'000)}); // back
    auto id = gen.next();
    REQUIRE(prev < id);
    REQUIRE(prev.to_string() < id.to_string());
    prev = id;
  }
  auto text = prev.to_string();
  REQUIRE(text.size() == 26);
  auto parsed = ulid::parse(text);
  REQUIRE(parsed);
  REQUIRE(*parsed == prev);
  REQUIRE(ulid::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV")->unix_ms() == 1469922850259);
  REQUIRE_FALSE(ulid::parse("01ARZ3NDEKTSV4RRFFQ69G5FA"));
  REQUIRE(ulid::parse("01ARZ3NDEKTSV4RRFFQ69G5FA!").error().message().find("position 25")
          != std::string::npos);
  REQUIRE_FALSE(ulid::parse("81ARZ3NDEKTSV4RRFFQ69G5FAV")); // overflows 128 bits
}

TEST_CASE("the seeded rng is deterministic and unbiased enough", "[rng]") {
  rng a{123}, b{123}, c{124};
  for (int i = 0; i < 1000; ++i)
    REQUIRE(a.next_u64() == b.next_u64());
  REQUIRE(a.next_u64() != c.next_u64());
  std::array<int, 10> buckets{};
  for (int i = 0; i < 100'000; ++i)
    ++buckets[c.uniform(10)];
  for (auto n : buckets)
    REQUIRE(std::abs(n - 10'000) < 500);
  for (int i = 0; i < 1000; ++i) {
    auto x = c.uniform01();
    REQUIRE((x >= 0.0 && x < 1.0));
  }
}
