// `af db status|migrate|compact`, `af backup` and `af restore`: maintenance of a node's store
// (SQLite under a data directory, or any store URL) from the command line, with af::store::backup.
#include "af/cli.hpp"
#include "af/store/backend.hpp"
#include "af/store/backup.hpp"
#include "commands.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

namespace af::cli::detail {

namespace {

namespace fs = std::filesystem;

/// --data-dir DIR | --store URL | the node's configuration (store_choice).
struct store_flags : store_choice {
  /// The store named; with `must_exist`, a SQLite file that is not there is an error, so that
  /// a typo does not silently create an empty database.
  [[nodiscard]] expected<store::store_target> target(bool must_exist) const {
    expected<store::store_target> t = store::data_dir_target(data_dir);
    if (data_dir.empty()) {
      auto u = url();
      if (!u) return u.error();
      t = store::resolve_store_url(*u);
    }
    if (!t) return t;
    std::error_code ec;
    if (must_exist && t->kind == "sqlite" && !fs::is_regular_file(t->where, ec))
      return not_found_error("sqlite " + t->where + ": no such database file (from " + origin()
                             + ")");
    return t;
  }
};

std::string join(const std::vector<std::string>& v) {
  std::ostringstream os;
  for (std::size_t i = 0; i < v.size(); ++i)
    os << (i == 0 ? "" : ", ") << v[i];
  return os.str();
}

int cmd_status(const store_flags& flags, bool json, std::ostream& out, std::ostream& err) {
  auto t = flags.target(true);
  if (!t) return fail(err, t.error());
  auto b = store::open_target(*t, false);
  if (!b) return fail(err, b.error());
  auto version = (*b)->schema_version();
  if (!version) return fail(err, version.error());
  auto tables = store::list_tables(*t);
  if (!tables) return fail(err, tables.error());
  const int latest = (*b)->latest_schema_version();
  auto size = (*b)->storage_bytes();
  if (!size) return fail(err, size.error());
  if (json) {
    out << nlohmann::json{{"backend", (*b)->kind()},
                          {"location", (*b)->location()},
                          {"schema_version", *version},
                          {"latest_schema_version", latest},
                          {"up_to_date", *version == latest},
                          {"tables", *tables},
                          {"bytes", *size}}
               .dump()
        << "\n";
    return k_exit_ok;
  }
  out << "backend:  " << (*b)->kind() << "\nlocation: " << (*b)->location()
      << "\nschema:   " << *version << " (latest " << latest << ")";
  if (*version < latest)
    out << ": " << latest - *version << " pending, applied when a node starts or by af db "
        << "migrate --to " << latest;
  else if (*version > latest)
    out << ": newer than this build";
  out << "\ntables:   " << (tables->empty() ? "(none)" : join(*tables)) << "\nsize:     " << *size
      << " bytes\n";
  return k_exit_ok;
}

int cmd_migrate(const store_flags& flags, int to, bool json, std::ostream& out, std::ostream& err) {
  auto t = flags.target(false);
  if (!t) return fail(err, t.error());
  auto range_error = [&](int latest) {
    return validation_error("--to " + std::to_string(to)
                            + ": out of range (0 drops every "
                              "table, "
                            + std::to_string(latest) + " is the latest migration)");
  };
  if (t->kind == "sqlite") {
    // Check the range before opening: opening creates the file.
    const int latest = store::latest_schema_version(t->kind);
    if (to < 0 || to > latest) return fail(err, range_error(latest));
    if (!flags.data_dir.empty()) {
      std::error_code ec;
      fs::create_directories(flags.data_dir, ec);
    }
  }
  // migrate = false: opening must not move the schema up before we move it where asked.
  auto b = store::open_target(*t, false);
  if (!b) return fail(err, b.error());
  const int latest = (*b)->latest_schema_version();
  if (to < 0 || to > latest) return fail(err, range_error(latest));
  auto from = (*b)->schema_version();
  if (!from) return fail(err, from.error());
  if (auto st = (*b)->migrate_to(to); !st) return fail(err, st.error());
  auto now = (*b)->schema_version();
  if (!now) return fail(err, now.error());
  if (json)
    out << nlohmann::json{{"backend", (*b)->kind()},
                          {"location", (*b)->location()},
                          {"from", *from},
                          {"to", *now},
                          {"latest_schema_version", latest}}
               .dump()
        << "\n";
  else if (*from == *now)
    out << (*b)->location() << ": schema already at version " << *now << "\n";
  else
    out << (*b)->location() << ": migrated schema from version " << *from << " to " << *now
        << " (latest " << latest << ")\n";
  return k_exit_ok;
}

/// "7d", "12h", "30m", "45s", "500ms" or "0": a retention period.
expected<duration> parse_period(const std::string& text) {
  auto bad = [&] {
    return validation_error("--retention '" + text
                            + "': expected a number and a unit (ms, s, m, h or d), e.g. 7d, or 0");
  };
  std::uint64_t n = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, n);
  if (ec != std::errc{} || p == text.data()) return bad();
  const std::string_view unit{p, static_cast<std::size_t>(end - p)};
  using namespace std::chrono;
  const std::uint64_t limit = 100ULL * 365 * 24 * 3600 * 1000; // 100 years, in ms
  std::uint64_t ms = 0;
  if (unit == "ms" || (unit.empty() && n == 0))
    ms = n;
  else if (unit == "s")
    ms = n * 1000;
  else if (unit == "m")
    ms = n * 60'000;
  else if (unit == "h")
    ms = n * 3'600'000;
  else if (unit == "d")
    ms = n * 86'400'000;
  else
    return bad();
  if (n > limit || ms > limit) return validation_error("--retention '" + text + "': too long");
  return duration_cast<duration>(milliseconds{ms});
}

int cmd_compact(const store_flags& flags, const std::string& retention, bool json,
                std::ostream& out, std::ostream& err) {
  auto period = parse_period(retention);
  if (!period) return fail(err, period.error());
  auto t = flags.target(true);
  if (!t) return fail(err, t.error());
  auto b = store::open_target(*t, false);
  if (!b) return fail(err, b.error());
  auto before = (*b)->storage_bytes();
  if (!before) return fail(err, before.error());
  store::compact_options co;
  co.now = std::chrono::time_point_cast<duration>(std::chrono::system_clock::now());
  co.retention = *period;
  co.reclaim = true;
  store::compact_result total;
  for (;;) {
    auto r = (*b)->compact(co);
    if (!r) return fail(err, r.error());
    total.streams_deleted += r->streams_deleted;
    total.streams_pruned += r->streams_pruned;
    total.events_deleted += r->events_deleted;
    if (!r->more) break;
  }
  auto after = (*b)->storage_bytes();
  if (!after) return fail(err, after.error());
  if (json) {
    out << nlohmann::json{{"backend", (*b)->kind()},
                          {"location", (*b)->location()},
                          {"retention_ms",
                           std::chrono::duration_cast<std::chrono::milliseconds>(*period).count()},
                          {"streams_deleted", total.streams_deleted},
                          {"streams_pruned", total.streams_pruned},
                          {"events_deleted", total.events_deleted},
                          {"bytes_before", *before},
                          {"bytes_after", *after}}
               .dump()
        << "\n";
    return k_exit_ok;
  }
  out << (*b)->location() << ": retention " << retention << ": deleted " << total.streams_deleted
      << " finished streams, pruned " << total.streams_pruned << " snapshotted streams, "
      << total.events_deleted << " events in all; " << *before << " -> " << *after << " bytes";
  if (*after >= *before && total.events_deleted > 0)
    out << " (freed pages are reused by later writes; the file does not shrink)";
  out << "\n";
  return k_exit_ok;
}

int cmd_backup(const store_flags& flags, const std::string& out_file, bool json, std::ostream& out,
               std::ostream& err) {
  auto t = flags.target(true);
  if (!t) return fail(err, t.error());
  auto r = store::backup_store(*t, out_file);
  if (!r) return fail(err, r.error());
  if (json)
    out << nlohmann::json{{"backend", t->kind},
                          {"location", r->location},
                          {"out", out_file},
                          {"bytes", r->bytes},
                          {"schema_version", r->schema_version}}
               .dump()
        << "\n";
  else
    out << "backed up " << t->kind << " " << r->location << " (schema version " << r->schema_version
        << ") to " << out_file << " (" << r->bytes << " bytes)\n";
  return k_exit_ok;
}

int cmd_restore(const store_flags& flags, const std::string& in_file, bool force, bool json,
                std::ostream& out, std::ostream& err) {
  auto t = flags.target(false);
  if (!t) return fail(err, t.error());
  auto r = store::restore_store(in_file, *t, force);
  if (!r) return fail(err, r.error());
  if (json)
    out << nlohmann::json{{"backend", t->kind},
                          {"location", r->location},
                          {"in", in_file},
                          {"schema_version", r->schema_version}}
               .dump()
        << "\n";
  else
    out << "restored " << in_file << " into " << t->kind << " " << r->location
        << " (schema version " << r->schema_version << ")\n";
  return k_exit_ok;
}

/// Shared state of the parsed command line; the runner outlives add_db_commands.
struct db_state {
  store_flags status_flags, migrate_flags, compact_flags, backup_flags, restore_flags;
  int to = -1;
  std::string out_file, in_file, retention;
  bool json = false, force = false;
  CLI::App *status = nullptr, *migrate = nullptr, *compact = nullptr, *backup = nullptr,
           *restore = nullptr;
};

} // namespace

runner add_db_commands(CLI::App& app, std::ostream& out, std::ostream& err) {
  auto s = std::make_shared<db_state>();
  auto* db = app.add_subcommand("db", "inspect, migrate and compact a store");
  db->require_subcommand(1);

  s->status = db->add_subcommand(
      "status", "print the backend, its location and the schema version applied and latest\n\n"
                "Example:\n  af db status --data-dir data\n"
                "  af db status --store postgres://af@127.0.0.1:5432/af --json");
  s->status_flags.add_to(*s->status);
  s->status->add_flag("--json", s->json, "print JSON");

  s->migrate = db->add_subcommand(
      "migrate", "apply migrations up or down to version N (0 drops every table and its data); "
                 "stop the node first\n\n"
                 "Example:\n  af db migrate --to 0 --data-dir data\n"
                 "  af db migrate --to 2 --store postgres://af@127.0.0.1:5432/af");
  s->migrate->add_option("--to", s->to, "the schema version wanted")->required();
  s->migrate_flags.add_to(*s->migrate);
  s->migrate->add_flag("--json", s->json, "print JSON");

  s->compact = db->add_subcommand(
      "compact", "apply retention now: delete streams finished longer ago than the period (events "
                 "and snapshot) and the events older snapshots cover; the audit chain is never "
                 "touched (docs/storage.md, \"Retention\")\n\n"
                 "Example:\n  af db compact --retention 7d --data-dir data\n"
                 "  af db compact --retention 0 --store postgres://af@127.0.0.1:5432/af --json");
  s->compact
      ->add_option("--retention", s->retention,
                   "keep what is younger than this: 7d, 12h, "
                   "30m, 45s, 500ms or 0")
      ->required();
  s->compact_flags.add_to(*s->compact);
  s->compact->add_flag("--json", s->json, "print JSON");

  s->backup = app.add_subcommand(
      "backup", "write a consistent copy of a store, also while a node writes to it (SQLite: "
                "online backup API; PostgreSQL: pg_dump)\n\n"
                "Example:\n  af backup --data-dir data --out agentflow-backup.db\n"
                "  af backup --store postgres://af@127.0.0.1:5432/af --out af.pgdump");
  s->backup_flags.add_to(*s->backup);
  s->backup->add_option("--out", s->out_file, "the backup file to write")->required();
  s->backup->add_flag("--json", s->json, "print JSON");

  s->restore = app.add_subcommand(
      "restore", "restore a file written by af backup into a store that does not exist yet (or "
                 "replace it with --force); stop the node first\n\n"
                 "Example:\n  af restore --in agentflow-backup.db --data-dir data2\n"
                 "  af restore --in af.pgdump --store postgres://af@127.0.0.1:5432/af --force");
  s->restore->add_option("--in", s->in_file, "the backup file")->required();
  s->restore_flags.add_to(*s->restore);
  s->restore->add_flag("--force", s->force, "replace an existing store");
  s->restore->add_flag("--json", s->json, "print JSON");

  return [s, &out, &err]() -> std::optional<int> {
    if (s->status->parsed()) return cmd_status(s->status_flags, s->json, out, err);
    if (s->migrate->parsed()) return cmd_migrate(s->migrate_flags, s->to, s->json, out, err);
    if (s->compact->parsed()) return cmd_compact(s->compact_flags, s->retention, s->json, out, err);
    if (s->backup->parsed()) return cmd_backup(s->backup_flags, s->out_file, s->json, out, err);
    if (s->restore->parsed())
      return cmd_restore(s->restore_flags, s->in_file, s->force, s->json, out, err);
    return std::nullopt;
  };
}

} // namespace af::cli::detail
