// Scenario 3: the envelope hash. "envelope hash" does what envelope::hash() does, through the
// public API: af::append_canonical into a reused buffer, then af::sha256. The baseline is raw
// af::sha256 over the same canonical bytes (precomputed). Payloads (serialized BytesValue) of
// 64 B, 1 KiB and 16 KiB. Informational: the full cost of envelope::make + payload serialization
// + hash on a fresh envelope per iteration.
// A sample is one block of hashes (about 1 MiB of canonical bytes), timed in thread CPU time; the
// variants alternate block by block.
//
//   af_bench_hash [--runs 5] [--blocks 100] [--prototype 1]
#include "bench_common.hpp"

#include "af/envelope.hpp"
#include "af/hash.hpp"
#include "af/ulid.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

using google::protobuf::BytesValue;

namespace {

/// Keeps the optimizer from dropping a result.
volatile std::uint8_t g_sink = 0;

/// Envelope fields like the ones the runtime makes, with a BytesValue payload whose serialized
/// form is exactly `payload_size` bytes.
af::envelope_fields make_fields(std::size_t payload_size) {
  auto payload = std::make_shared<BytesValue>();
  // tag (1 byte) + length varint (1 byte below 128, 2 bytes below 16384) + value
  const std::size_t overhead = payload_size - 2 < 128 ? 2 : 3;
  payload->set_value(std::string(payload_size - overhead, 'x'));
  if (payload->ByteSizeLong() != payload_size) {
    std::fprintf(stderr, "bench: payload is %zu bytes, wanted %zu\n", payload->ByteSizeLong(),
                 payload_size);
    std::exit(1);
  }
  af::envelope_fields f;
  f.message_id = af::ulid::from_parts(1'800'000'000'000, 0x1234, 0x0123456789abcdefULL);
  f.tenant = "default";
  for (std::size_t i = 0; i < f.trace.trace_id.size(); ++i)
    f.trace.trace_id[i] = static_cast<std::uint8_t>(i * 7 + 1);
  for (std::size_t i = 0; i < f.trace.span_id.size(); ++i)
    f.trace.span_id[i] = static_cast<std::uint8_t>(i * 13 + 5);
  f.trace.flags = 1;
  f.correlation_id = af::ulid::from_parts(1'800'000'000'000, 0x42, 0x42);
  f.causation_id = f.correlation_id;
  f.sender = {"af-node", "planner"};
  f.receiver = {"af-node", "worker-17"};
  f.payload = std::move(payload);
  f.logical_ts = 12345;
  return f;
}

/// One measured operation: its block size and what it measured so far.
struct timed_op {
  timed_op(std::function<void()> f, std::size_t block, std::size_t every_nth = 1)
      : op(std::move(f)), per_block(block), every(every_nth) {}
  std::function<void()> op;
  std::size_t per_block;
  std::size_t every; // runs in every `every`-th block only (the slow informational one)
  bench::run r;
  double total = 0;
};

/// One run: `blocks` rounds in which every op times one block of `per_block` calls, so that the
/// variants alternate block by block and see the same machine conditions. Thread CPU time.
void run_interleaved(std::size_t blocks, std::vector<timed_op*> ops) {
  for (auto* o : ops) {
    o->r = {};
    o->total = 0;
    o->r.ops_per_sample = static_cast<double>(o->per_block);
    for (std::size_t i = 0; i < o->per_block; ++i) // warm-up
      o->op();
  }
  for (std::size_t b = 0; b < blocks; ++b)
    for (auto* o : ops) {
      if (b % o->every != 0) continue;
      const auto t0 = bench::thread_cpu_seconds();
      for (std::size_t i = 0; i < o->per_block; ++i)
        o->op();
      const auto s = bench::thread_cpu_seconds() - t0;
      o->r.samples.push_back(s);
      o->r.ops += o->per_block;
      o->total += s;
    }
  for (auto* o : ops)
    o->r.value = static_cast<double>(o->r.ops) / o->total;
}

/// --prototype only: the same canonical bytes written with one resize and fixed-size stores
/// instead of ~40 std::string appends; measures what a rewrite of af::append_canonical could
/// gain (docs/benchmarks.md, "Where the time goes"). Not used by the published scenarios.
void prototype_canonical(const af::envelope_fields& f, std::string_view type,
                         std::string_view payload, std::string& out) {
  // Fixed part: magic 4, 13 length-prefixed fields x 5, ids and trace 80, tags 6/15/16 with
  // their values 5 + 9 + 5; headers add 8 + key + value each.
  std::size_t size = 4 + 13 * 5 + 80 + 5 + 9 + 5 + f.tenant.size() + f.sender.node.size()
                     + f.sender.name.size() + f.receiver.node.size() + f.receiver.name.size()
                     + type.size() + payload.size();
  for (const auto& [k, v] : f.headers)
    size += 8 + k.size() + v.size();
  const auto start = out.size();
  out.resize(start + size);
  char* p = out.data() + start;
  auto u32 = [&p](std::uint32_t v) {
    p[0] = static_cast<char>(v >> 24);
    p[1] = static_cast<char>(v >> 16);
    p[2] = static_cast<char>(v >> 8);
    p[3] = static_cast<char>(v);
    p += 4;
  };
  auto bytes = [&p](std::string_view b) {
    std::memcpy(p, b.data(), b.size());
    p += b.size();
  };
  auto field = [&](std::uint8_t tag, std::string_view b) {
    *p++ = static_cast<char>(tag);
    u32(static_cast<std::uint32_t>(b.size()));
    bytes(b);
  };
  auto arr = [](const auto& a) {
    return std::string_view{reinterpret_cast<const char*>(a.data()), a.size()};
  };
  bytes("AFE1");
  field(1, f.message_id.raw());
  field(2, f.tenant);
  field(3, arr(f.trace.trace_id));
  field(4, arr(f.trace.span_id));
  field(5, arr(f.trace.parent_span_id));
  *p++ = 6;
  u32(f.trace.flags);
  field(7, f.correlation_id.raw());
  field(8, f.causation_id.raw());
  field(9, f.sender.node);
  field(10, f.sender.name);
  field(11, f.receiver.node);
  field(12, f.receiver.name);
  field(13, type);
  field(14, payload);
  *p++ = 15;
  u32(static_cast<std::uint32_t>(f.logical_ts >> 32));
  u32(static_cast<std::uint32_t>(f.logical_ts));
  *p++ = 16;
  u32(static_cast<std::uint32_t>(f.headers.size()));
  for (const auto& [k, v] : f.headers) {
    u32(static_cast<std::uint32_t>(k.size()));
    bytes(k);
    u32(static_cast<std::uint32_t>(v.size()));
    bytes(v);
  }
  if (p != out.data() + out.size()) {
    std::fprintf(stderr, "bench: prototype size mismatch\n");
    std::exit(1);
  }
}

std::string size_label(std::size_t bytes) {
  return bytes >= 1024 ? std::to_string(bytes / 1024) + "KiB" : std::to_string(bytes) + "B";
}

} // namespace

int main(int argc, char** argv) {
  const auto runs = static_cast<std::size_t>(bench::int_option(argc, argv, "--runs", 5));
  const auto blocks = static_cast<std::size_t>(bench::int_option(argc, argv, "--blocks", 100));
  // --prototype 1: time a rewritten canonical writer in place of the informational full cost.
  const bool prototype = bench::int_option(argc, argv, "--prototype", 0) != 0;

  for (std::size_t payload_size : {std::size_t{64}, std::size_t{1024}, std::size_t{16384}}) {
    const auto fields = make_fields(payload_size);
    const auto reference = af::envelope::make(fields);
    const std::string& type_name = reference.payload_type_name();
    const std::string& payload_bytes = reference.payload_bytes();
    const std::string canonical = reference.canonical();
    if (af::sha256(canonical) != reference.hash()) {
      std::fprintf(stderr, "bench: sha256(canonical()) differs from envelope::hash()\n");
      return 1;
    }
    const double mb = static_cast<double>(canonical.size()) / 1e6; // per envelope
    if (prototype) {
      std::string pbuf;
      prototype_canonical(fields, type_name, payload_bytes, pbuf);
      if (pbuf != canonical) {
        std::fprintf(stderr, "bench: prototype canonical bytes differ\n");
        return 1;
      }
    }
    const std::size_t per_block = std::max<std::size_t>(1, (1u << 20) / canonical.size());

    std::vector<bench::run> env_runs, raw_runs, full_runs;
    std::string buf; // reused, as envelope::hash() reuses a thread-local buffer
    timed_op env_op{[&] {
                      buf.clear();
                      af::append_canonical(fields, type_name, payload_bytes, buf);
                      g_sink = g_sink + af::sha256(buf)[0];
                    },
                    per_block};
    timed_op raw_op{[&] { g_sink = g_sink + af::sha256(canonical)[0]; }, per_block};
    // Informational: a fresh envelope each time (fields copied as the runtime builds them),
    // payload serialized on first use, then hashed.
    timed_op full_op{[&] {
                       if (prototype) {
                         buf.clear();
                         prototype_canonical(fields, type_name, payload_bytes, buf);
                         g_sink = g_sink + af::sha256(buf)[0];
                         return;
                       }
                       auto copy = fields;
                       auto e = af::envelope::make(std::move(copy));
                       g_sink = g_sink + e.hash()[0];
                     },
                     per_block, prototype ? std::size_t{1} : std::size_t{4}};
    for (std::size_t r = 0; r < runs; ++r) {
      run_interleaved(blocks, {&env_op, &raw_op, &full_op});
      env_runs.push_back(env_op.r);
      raw_runs.push_back(raw_op.r);
      full_runs.push_back(full_op.r);
    }
    auto with_mb = [mb](bench::summary s) {
      s.extra = std::pair{std::string{"mb_s"}, s.median * mb};
      return s;
    };
    auto e = with_mb(bench::summarize(env_runs, bench::kind::rate, "envelopes/s"));
    auto raw = with_mb(bench::summarize(raw_runs, bench::kind::rate, "envelopes/s"));
    auto full = with_mb(bench::summarize(full_runs, bench::kind::rate, "envelopes/s"));
    const auto label = size_label(payload_size);
    const auto canon = std::to_string(canonical.size()) + " canonical bytes";
    bench::emit("hash.envelope." + label, "Envelope hash, " + label + " payload (" + canon + ")", e,
                &raw, "raw af::sha256 over the same canonical bytes",
                bench::target{"ratio", ">=", 0.8});
    bench::emit("hash.make_full." + label,
                "envelope::make + payload serialization + hash, " + label + " payload", full, &raw,
                "raw af::sha256 over the same canonical bytes");
  }
  return 0;
}
