// `af audit verify|tail`: checks and prints the tamper-evident audit chain of a store. The hash
// checks run on every core (store::parallel_verify_options; outside the actor runtime and its
// determinism rules).
#include "af/cli.hpp"
#include "af/hash.hpp"
#include "af/store/audit.hpp"
#include "af/store/backend.hpp"
#include "af/v1/audit.pb.h"
#include "commands.hpp"

#include <nlohmann/json.hpp>

#include <ctime>
#include <filesystem>
#include <iomanip>
#include <sstream>

namespace af::cli::detail {

namespace {

namespace fs = std::filesystem;

struct store_flags : store_choice {
  /// Opens the store without creating or migrating anything: a missing SQLite file is an error.
  [[nodiscard]] expected<std::unique_ptr<store::backend>> open(const std::string& cmd) const {
    auto chosen = store_choice::url();
    if (!chosen) return chosen.error();
    std::string url = *chosen;
    if (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
      store::postgres_options po;
      po.url = url;
      po.pool_size = 1;
      po.migrate = false;
      return store::open_postgres(po);
    }
    if (url.starts_with("memory:")) return store::open_url(url);
    fs::path path = url.starts_with("sqlite:") ? url.substr(7) : url;
    std::error_code ec;
    if (fs::is_directory(path, ec)) path /= "agentflow.db";
    if (!fs::is_regular_file(path, ec))
      return not_found_error(cmd + ": no store at '" + path.string() + "' (from " + origin() + ")");
    store::sqlite_options so;
    so.path = path.string();
    so.migrate = false;
    return store::open_sqlite(so);
  }
};

int cmd_verify(const store_flags& flags, bool json, std::ostream& out, std::ostream& err) {
  auto db = flags.open("audit verify");
  if (!db) return fail(err, db.error());
  // Every row's hash and columns checked on every core, the next page read meanwhile.
  // A second connection reads and checks the second half of the chain on another core.
  auto r = store::verify_chain(
      **db, store::parallel_verify_options([&flags] { return flags.open("audit verify"); }));
  if (!r) return fail(err, r.error());
  if (json) {
    nlohmann::json j{{"store", (*db)->location()}, {"intact", r->intact()}, {"count", r->count}};
    if (!r->intact()) {
      j["first_bad_seq"] = *r->first_bad_seq;
      j["fault"] = std::string{store::to_string(r->fault)};
      j["why"] = r->why;
    }
    out << j.dump() << "\n";
  } else if (r->intact()) {
    out << "audit chain intact: " << r->count << " records (" << (*db)->location() << ")\n";
  } else {
    out << "audit chain BROKEN at seq " << *r->first_bad_seq << " (" << store::to_string(r->fault)
        << "): " << r->why << "\n"
        << r->count << " records before it verified (" << (*db)->location() << ")\n";
  }
  return r->intact() ? k_exit_ok : k_exit_failure;
}

std::string iso_time(std::int64_t ns) {
  auto secs = static_cast<std::time_t>(ns / 1'000'000'000);
  auto ms = (ns % 1'000'000'000) / 1'000'000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::ostringstream s;
  s << std::put_time(&tm, "%Y-%m-%dT%H:%M:%S") << '.' << std::setw(3) << std::setfill('0') << ms
    << 'Z';
  return s.str();
}

int cmd_tail(const store_flags& flags, std::size_t n, bool json, std::ostream& out,
             std::ostream& err) {
  auto db = flags.open("audit tail");
  if (!db) return fail(err, db.error());
  auto head = (*db)->audit_last();
  if (!head) return fail(err, head.error());
  auto from = head->seq >= n ? head->seq - n + 1 : 1;
  auto rows = (*db)->audit_read(from, n);
  if (!rows) return fail(err, rows.error());
  auto arr = nlohmann::json::array();
  for (const auto& row : *rows) {
    v1::AuditRecord rec;
    bool parsed = rec.ParseFromString(row.record);
    auto ts = row.ts.time_since_epoch().count();
    if (json) {
      nlohmann::json details = nlohmann::json::object();
      for (const auto& [k, v] : rec.details())
        details[k] = v;
      nlohmann::json j{
          {"seq", row.seq},          {"tenant", row.tenant}, {"ts_ns", ts},
          {"ts", iso_time(ts)},      {"actor", row.actor},   {"action", row.action},
          {"subject", row.subject},  {"details", details},   {"prev_hash", to_hex(row.prev_hash)},
          {"hash", to_hex(row.hash)}};
      if (!rec.trace_id().empty()) j["trace_id"] = rec.trace_id();
      if (!rec.span_id().empty()) j["span_id"] = rec.span_id();
      if (!rec.payload_type().empty()) j["payload_type"] = rec.payload_type();
      if (!parsed) j["record_unreadable"] = true;
      arr.push_back(std::move(j));
      continue;
    }
    out << row.seq << "  " << iso_time(ts) << "  " << (row.tenant.empty() ? "-" : row.tenant)
        << "  " << row.actor << "  " << row.action << "  " << row.subject;
    for (const auto& [k, v] : rec.details())
      out << "  " << k << "=" << v;
    out << "  " << to_hex(row.hash).substr(0, 16) << (parsed ? "" : "  (record unreadable)")
        << "\n";
  }
  if (json)
    out << arr.dump() << "\n";
  else if (rows->empty())
    out << "(the audit chain is empty)\n";
  return k_exit_ok;
}

} // namespace

runner add_audit_commands(CLI::App& app, std::ostream& out, std::ostream& err) {
  struct state {
    store_flags verify_flags, tail_flags;
    bool json = false;
    std::size_t n = 10;
    CLI::App* verify = nullptr;
    CLI::App* tail = nullptr;
  };
  auto st = std::make_shared<state>();
  auto* audit = app.add_subcommand(
      "audit", "verify or read the hash-chained audit log (docs/storage.md, \"Audit chain\")");
  audit->require_subcommand(1);
  st->verify = audit->add_subcommand(
      "verify", "check every record's hash and link; exit 0 and the count when the chain is\n"
                "intact, exit 1 and first_bad_seq (the first edited, deleted, inserted or\n"
                "reordered record) otherwise\n\nExample:\n"
                "  af audit verify --data-dir /var/lib/agentflow\n"
                "  af audit verify --store postgres://af@127.0.0.1:5432/af --json");
  st->verify_flags.add_to(*st->verify);
  st->verify->add_flag("--json", st->json, "print JSON");
  st->tail = audit->add_subcommand(
      "tail", "print the last records of the audit chain, oldest first\n\nExample:\n"
              "  af audit tail --data-dir /var/lib/agentflow -n 20\n"
              "  af audit tail --store postgres://af@127.0.0.1:5432/af --json");
  st->tail_flags.add_to(*st->tail);
  st->tail->add_option("-n", st->n, "how many records")->check(CLI::Range(1, 1'000'000));
  st->tail->add_flag("--json", st->json, "print JSON (an array of records)");
  return [st, &out, &err]() -> std::optional<int> {
    if (st->verify->parsed()) return cmd_verify(st->verify_flags, st->json, out, err);
    if (st->tail->parsed()) return cmd_tail(st->tail_flags, st->n, st->json, out, err);
    return std::nullopt;
  };
}

} // namespace af::cli::detail
