// The child of the crash-safety test (tests/persistence/crash_test.cpp): a node with the real
// journal agent and audit writer over SQLite (synchronous=FULL) and a few appender agents that
// append batches forever, audit each acknowledged append, and print what was acknowledged. The
// test SIGKILLs it at random moments and checks the store against what it printed.
//
//   af_crash_appender DB_PATH GEN SEED [APPENDERS] [MAX_SECONDS]
//
// stdout, one line per write(2) (atomic on a pipe), so the parent sees exactly what was
// acknowledged before the kill:
//   start <stream> <version>        the stream's version read from the journal at start
//   ready                           the appenders are running
//   ack <stream> <first_version> <last_version> <gen> <appender> <batch> <k> <audit_seq>
//                                   both the append and its audit record were acknowledged
// Event payloads are crash_payload(stream, gen, appender, batch, index, k) (crash_payload.hpp).
#include "af/agent.hpp"
#include "af/node.hpp"
#include "af/store/audit.hpp"
#include "af/store/journal.hpp"
#include "af/v1/audit.pb.h"
#include "af/v1/store.pb.h"
#include "crash_payload.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using google::protobuf::UInt64Value;

/// Writes one whole line with write(2): no stdio buffer to lose at SIGKILL.
void emit(const std::string& line) {
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    auto n = ::write(STDOUT_FILENO, p, left);
    if (n < 0) std::_Exit(3); // the parent is gone
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "af_crash_appender: %s\n", why.c_str());
  std::_Exit(2);
}

struct appender_args {
  std::uint64_t gen = 0;
  std::uint64_t id = 0;
  std::uint64_t seed = 0;
  std::shared_ptr<const std::map<std::string, std::uint64_t>> versions; ///< read at start
};

/// Appends a batch of 1..5 events to a random stream at the version it believes current; on a
/// conflict (another appender got there first) re-reads the version and goes on.
class appender : public af::agent_base<appender> {
public:
  explicit appender(appender_args a) : a_(std::move(a)), rng_(a_.seed), known_(*a_.versions) {
    for (const auto& [s, v] : known_)
      streams_.push_back(s);
  }

  static void define(af::handlers<appender>& h) { h.kind("test.crash_appender").on(&appender::go); }

  void go(af::context& ctx, const UInt64Value&) { next(ctx); }

private:
  void next(af::context& ctx) {
    const auto stream = streams_[rng_.uniform(streams_.size())];
    const auto k = 1 + rng_.uniform(af::test::k_crash_max_batch);
    const auto batch = ++batches_;
    af::v1::AppendRequest req;
    req.set_stream(stream);
    req.set_expected_version(known_[stream]);
    for (std::uint64_t i = 0; i < k; ++i) {
      auto* e = req.add_events();
      e->set_type(std::string{af::test::k_crash_event_type});
      e->set_payload(af::test::crash_payload(stream, a_.gen, a_.id, batch, i, k));
    }
    ctx.ask<af::v1::AppendResult>(
        af::store::k_journal_agent, std::move(req), 30s,
        [this, &ctx, stream, batch, k](af::expected<af::v1::AppendResult> r) {
          if (!r) {
            if (r.error().code() != af::errc::conflict) die("append: " + r.error().to_string());
            return reread(ctx, stream);
          }
          if (r->last_version() - r->first_version() + 1 != k)
            die("append of " + std::to_string(k) + " events acknowledged versions "
                + std::to_string(r->first_version()) + ".." + std::to_string(r->last_version()));
          known_[stream] = r->last_version();
          audit(ctx, stream, *r, batch, k);
        });
  }

  void audit(af::context& ctx, const std::string& stream, const af::v1::AppendResult& r,
             std::uint64_t batch, std::uint64_t k) {
    af::v1::AuditAppend a;
    auto* rec = a.mutable_record();
    rec->set_actor("crash-appender/" + std::to_string(a_.id));
    rec->set_action(std::string{af::test::k_crash_audit_action});
    rec->set_subject(stream);
    auto& d = *rec->mutable_details();
    d["first"] = std::to_string(r.first_version());
    d["last"] = std::to_string(r.last_version());
    d["gen"] = std::to_string(a_.gen);
    d["appender"] = std::to_string(a_.id);
    d["batch"] = std::to_string(batch);
    d["k"] = std::to_string(k);
    const auto first = r.first_version(), last = r.last_version();
    ctx.ask<af::v1::AuditAppended>(
        af::store::k_audit_agent, std::move(a), 30s,
        [this, &ctx, stream, first, last, batch, k](af::expected<af::v1::AuditAppended> ok) {
          if (!ok) die("audit: " + ok.error().to_string());
          emit("ack " + stream + " " + std::to_string(first) + " " + std::to_string(last) + " "
               + std::to_string(a_.gen) + " " + std::to_string(a_.id) + " " + std::to_string(batch)
               + " " + std::to_string(k) + " " + std::to_string(ok->seq()) + "\n");
          next(ctx);
        });
  }

  void reread(af::context& ctx, const std::string& stream) {
    af::v1::ReadRequest rr;
    rr.set_stream(stream);
    rr.set_from_version(std::uint64_t{1} << 62); // only the version, no events
    rr.set_max(1);
    ctx.ask<af::v1::ReadResult>(af::store::k_journal_agent, std::move(rr), 30s,
                                [this, &ctx, stream](af::expected<af::v1::ReadResult> r) {
                                  if (!r) die("read " + stream + ": " + r.error().to_string());
                                  known_[stream] = r->stream_version();
                                  next(ctx);
                                });
  }

  appender_args a_;
  af::rng rng_;
  std::map<std::string, std::uint64_t> known_;
  std::vector<std::string> streams_;
  std::uint64_t batches_ = 0;
};

std::uint64_t arg_u64(char** argv, int i) { return std::strtoull(argv[i], nullptr, 10); }

} // namespace

int main(int argc, char** argv) {
  if (argc < 4) die("usage: af_crash_appender DB_PATH GEN SEED [APPENDERS] [MAX_SECONDS]");
  const std::string path = argv[1];
  const auto gen = arg_u64(argv, 2);
  const auto seed = arg_u64(argv, 3);
  const auto appenders = argc > 4 ? arg_u64(argv, 4) : 4;
  const auto max_seconds = argc > 5 ? arg_u64(argv, 5) : 60;

  af::node::options o;
  af::log_options lo;
  lo.level = af::log_level::warn;
  lo.format = "json";
  auto lb = af::make_log_backend(lo);
  if (!lb) die("log: " + lb.error().to_string());
  o.log = *lb;
  af::store::sqlite_options so;
  so.path = path;
  so.synchronous = "FULL";
  af::store::journal_options jo;
  jo.open = [so]() { return af::store::open_sqlite(so); };
  af::store::audit_options ao;
  ao.open = jo.open;
  o.system_services.push_back(af::store::journal_child(std::move(jo)));
  o.system_services.push_back(af::store::audit_child(std::move(ao)));
  auto nd = af::node::start(std::move(o));
  if (!nd) die("node start: " + nd.error().to_string());
  auto& n = **nd;

  auto versions = std::make_shared<std::map<std::string, std::uint64_t>>();
  for (std::uint64_t s = 0; s < af::test::k_crash_streams; ++s) {
    const auto stream = af::test::crash_stream(s);
    af::v1::ReadRequest rr;
    rr.set_stream(stream);
    rr.set_from_version(std::uint64_t{1} << 62);
    rr.set_max(1);
    auto r = n.ask<af::v1::ReadResult>(af::store::k_journal_agent, rr, 30s);
    if (!r) die("read " + stream + ": " + r.error().to_string());
    (*versions)[stream] = r->stream_version();
    emit("start " + stream + " " + std::to_string(r->stream_version()) + "\n");
  }
  std::vector<af::agent_ref> refs;
  for (std::uint64_t i = 0; i < appenders; ++i) {
    auto a = n.spawn<appender>("crash-appender-" + std::to_string(i),
                               appender_args{gen, i, seed * 1000003 + i, versions});
    if (!a) die("spawn: " + a.error().to_string());
    refs.push_back(*a);
  }
  emit("ready\n");
  for (const auto& r : refs)
    n.tell(r, UInt64Value{});
  // Runs until killed; the time limit only stops an orphan.
  std::this_thread::sleep_for(std::chrono::seconds(max_seconds));
  std::_Exit(0);
}
