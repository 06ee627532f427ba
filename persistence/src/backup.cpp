// Backup, restore and table listing for the CLI: SQLite through its online backup API,
// PostgreSQL through pg_dump/pg_restore run with posix_spawn. Blocking, never called by actors.
#include "af/store/backup.hpp"

#include "store_url.hpp"

#include "migrations.hpp"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace af::store {

using detail::scheme_of;
using detail::sqlite_file;

namespace {

namespace fs = std::filesystem;

// --- SQLite ------------------------------------------------------------------------------------

struct db_closer {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

error sqlite_fail(const std::string& path, std::string_view what, sqlite3* db) {
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
  const int rc = db != nullptr ? sqlite3_errcode(db) : SQLITE_NOMEM;
  const auto code = rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT ? errc::validation : errc::internal;
  return make_error(code, "sqlite " + path + ": " + std::string{what} + ": " + msg);
}

expected<db_ptr> sqlite_open(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  db_ptr db{raw};
  if (rc != SQLITE_OK) return sqlite_fail(path, "open", db.get());
  sqlite3_busy_timeout(db.get(), 5000);
  return db;
}

/// The rows of a one-column text query.
expected<std::vector<std::string>> sqlite_column(sqlite3* db, const std::string& path,
                                                 const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK)
    return sqlite_fail(path, sql, db);
  stmt_ptr st{raw};
  std::vector<std::string> out;
  int rc = 0;
  while ((rc = sqlite3_step(st.get())) == SQLITE_ROW) {
    const auto* text = sqlite3_column_text(st.get(), 0);
    out.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "");
  }
  if (rc != SQLITE_DONE) return sqlite_fail(path, sql, db);
  return out;
}

expected<std::vector<std::string>> sqlite_tables(sqlite3* db, const std::string& path) {
  return sqlite_column(db, path,
                       "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                       "'sqlite_%' ORDER BY name");
}

/// The applied migration number of an open database (0 without schema_migrations).
expected<int> sqlite_schema_version(sqlite3* db, const std::string& path) {
  auto tables = sqlite_tables(db, path);
  if (!tables) return tables.error();
  if (std::find(tables->begin(), tables->end(), "schema_migrations") == tables->end()) return 0;
  auto v = sqlite_column(db, path, "SELECT coalesce(max(version), 0) FROM schema_migrations");
  if (!v) return v.error();
  return v->empty() ? 0 : std::atoi(v->front().c_str());
}

error missing_file(const std::string& path) {
  return not_found_error("sqlite " + path + ": no such database file");
}

status fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return internal_error(path + ": fsync: " + why);
  }
  ::close(fd);
  return {};
}

expected<backup_result> backup_sqlite(const std::string& src_path, const std::string& out_file) {
  std::error_code ec;
  if (!fs::is_regular_file(src_path, ec)) return missing_file(src_path);
  auto src = sqlite_open(src_path, SQLITE_OPEN_READWRITE);
  if (!src) return src.error();
  // A garbage file opens fine; the first read says what it is.
  if (auto t = sqlite_tables(src->get(), src_path); !t) return t.error();

  const std::string tmp = out_file + ".tmp";
  fs::remove(tmp, ec);
  auto dst = sqlite_open(tmp, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!dst) return dst.error();
  sqlite3_backup* b = sqlite3_backup_init(dst->get(), "main", src->get(), "main");
  if (b == nullptr) return sqlite_fail(out_file, "backup", dst->get());
  // One step copies every page under one read transaction: a consistent snapshot, while
  // writers on other connections go on (WAL). Busy/locked only while a writer checkpoints.
  int rc = SQLITE_OK;
  for (int attempt = 0; attempt < 200; ++attempt) {
    rc = sqlite3_backup_step(b, -1);
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
    sqlite3_sleep(50);
  }
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    auto e = make_error(errc::internal, "sqlite " + src_path + ": backup to " + out_file + ": "
                                            + sqlite3_errstr(rc));
    dst->reset();
    fs::remove(tmp, ec);
    return e;
  }
  // The copy inherits WAL mode; a backup should be one self-contained file.
  if (sqlite3_exec(dst->get(), "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr)
      != SQLITE_OK)
    return sqlite_fail(out_file, "PRAGMA journal_mode=DELETE", dst->get());
  auto version = sqlite_schema_version(dst->get(), out_file);
  if (!version) return version.error();
  dst.value().reset();
  if (auto st = fsync_file(tmp); !st) return st.error();
  fs::rename(tmp, out_file, ec);
  if (ec) return internal_error(out_file + ": cannot write backup: " + ec.message());
  return backup_result{src_path, *version, static_cast<std::uint64_t>(fs::file_size(out_file))};
}

expected<restore_result> restore_sqlite(const std::string& in_file, const std::string& target,
                                        bool force) {
  std::error_code ec;
  if (fs::exists(target, ec) && !force)
    return make_error(errc::conflict,
                      "sqlite " + target + ": the database exists: pass --force to replace it");
  // Check the copy before touching the target: a bad backup must not destroy a good store.
  if (auto parent = fs::path{target}.parent_path(); !parent.empty())
    fs::create_directories(parent, ec);
  const std::string tmp = target + ".restore.tmp";
  fs::remove(tmp, ec);
  fs::copy_file(in_file, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) return internal_error(target + ": cannot copy the backup there: " + ec.message());
  auto cleanup = [&] {
    std::error_code ignored;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
      fs::remove(tmp + suffix, ignored);
  };
  int version = 0;
  {
    auto b = open_sqlite({.path = tmp, .migrate = false});
    if (!b) {
      cleanup();
      return make_error(b.error().code(), "restore from " + in_file + ": " + b.error().message());
    }
    auto v = (*b)->schema_version();
    if (!v) {
      cleanup();
      return v.error();
    }
    if (*v > (*b)->latest_schema_version()) {
      cleanup();
      return validation_error("restore from " + in_file + ": schema version " + std::to_string(*v)
                              + " is newer than this build knows ("
                              + std::to_string((*b)->latest_schema_version()) + ")");
    }
    version = *v;
  }
  if (auto st = fsync_file(tmp); !st) return st.error();
  // A stale WAL beside the new file would be replayed into it.
  for (const char* suffix : {"-wal", "-shm", "-journal"})
    fs::remove(target + suffix, ec);
  fs::rename(tmp, target, ec);
  if (ec) {
    cleanup();
    return internal_error(target
                          + ": cannot move the restored database into place: " + ec.message());
  }
  return restore_result{target, version};
}

// --- PostgreSQL --------------------------------------------------------------------------------

struct pg_closer {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct pg_result_clear {
  void operator()(PGresult* r) const { PQclear(r); }
};

/// Runs `sql` and returns its first column; `location` names the store in errors.
expected<std::vector<std::string>> pg_column(const std::string& url, const std::string& location,
                                             const std::string& sql) {
  std::unique_ptr<PGconn, pg_closer> conn{PQconnectdb(url.c_str())};
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    std::string msg = conn ? PQerrorMessage(conn.get()) : "out of memory";
    while (!msg.empty() && std::isspace(static_cast<unsigned char>(msg.back())))
      msg.pop_back();
    return make_error(errc::transient, "postgres " + location + ": connect: " + msg);
  }
  std::unique_ptr<PGresult, pg_result_clear> res{PQexec(conn.get(), sql.c_str())};
  const auto st = PQresultStatus(res.get());
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
    return internal_error("postgres " + location + ": " + PQerrorMessage(conn.get()));
  std::vector<std::string> out;
  if (st == PGRES_TUPLES_OK)
    for (int i = 0; i < PQntuples(res.get()); ++i)
      out.emplace_back(PQgetvalue(res.get(), i, 0));
  return out;
}

expected<std::vector<std::string>> pg_tables(const std::string& url, const std::string& location) {
  return pg_column(url, location,
                   "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                   "current_schema() AND table_type = 'BASE TABLE' ORDER BY 1");
}

/// pg_dump or pg_restore: in PATH, else where Debian's postgresql-15 puts it.
expected<std::string> find_pg_tool(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::string_view p = path;
    while (!p.empty()) {
      auto colon = p.find(':');
      dirs.emplace_back(p.substr(0, colon));
      if (colon == std::string_view::npos) break;
      p.remove_prefix(colon + 1);
    }
  }
  dirs.emplace_back("/usr/lib/postgresql/15/bin");
  for (const auto& d : dirs) {
    if (d.empty()) continue;
    auto candidate = (fs::path{d} / name).string();
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return not_found_error(name
                         + " not found in PATH or /usr/lib/postgresql/15/bin: install the "
                           "PostgreSQL client tools (apt-get install postgresql-client-15)");
}

/// A libpq URL split into a conninfo string without the password (for the command line, which
/// `ps` shows to everyone) and the password (for PGPASSWORD in the child's environment).
struct pg_args {
  std::string conninfo;
  std::vector<std::string> env;
};

expected<pg_args> pg_args_of(const std::string& url, const std::string& location) {
  char* errmsg = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &errmsg);
  if (opts == nullptr) {
    std::string msg = errmsg != nullptr ? errmsg : "cannot parse";
    PQfreemem(errmsg);
    return validation_error("postgres " + location + ": " + msg);
  }
  pg_args out;
  std::string password;
  for (auto* o = opts; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    if (std::string_view{o->keyword} == "password") {
      password = o->val;
      continue;
    }
    std::string v;
    for (const char* c = o->val; *c != '\0'; ++c) {
      if (*c == '\\' || *c == '\'') v += '\\';
      v += *c;
    }
    out.conninfo += std::string{o->keyword} + "='" + v + "' ";
  }
  PQconninfoFree(opts);
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (password.empty() || !std::string_view{*e}.starts_with("PGPASSWORD="))
      out.env.emplace_back(*e);
  if (!password.empty()) out.env.push_back("PGPASSWORD=" + password);
  return out;
}

/// Runs a program (stdin and stdout /dev/null) with `env` and returns its exit code and stderr.
expected<std::pair<int, std::string>> run_program(const std::string& program,
                                                  const std::vector<std::string>& args,
                                                  std::vector<std::string> env) {
  std::array<int, 2> pipe_fds{-1, -1};
  if (::pipe2(pipe_fds.data(), O_CLOEXEC) != 0)
    return internal_error(program + ": pipe: " + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  std::vector<std::string> argv_s{program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    return internal_error(program + ": cannot start: " + std::strerror(rc));
  }
  std::string err_text;
  std::array<char, 4096> buf{};
  for (;;) {
    const auto n = ::read(pipe_fds[0], buf.data(), buf.size());
    if (n > 0) {
      err_text.append(buf.data(), static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(pipe_fds[0]);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0)
    if (errno != EINTR) return internal_error(program + ": waitpid: " + std::strerror(errno));
  while (!err_text.empty() && std::isspace(static_cast<unsigned char>(err_text.back())))
    err_text.pop_back();
  const int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  return std::pair{code, err_text};
}

expected<backup_result> backup_postgres(const std::string& url, const std::string& out_file) {
  auto b = open_postgres({.url = url, .pool_size = 1, .migrate = false});
  if (!b) return b.error();
  const std::string location = (*b)->location();
  auto version = (*b)->schema_version();
  if (!version) return version.error();
  b->reset();
  auto tool = find_pg_tool("pg_dump");
  if (!tool) return tool.error();
  auto args = pg_args_of(url, location);
  if (!args) return args.error();
  const std::string tmp = out_file + ".tmp";
  auto r = run_program(*tool,
                       {"--format=custom", "--no-owner", "--no-privileges", "--file=" + tmp,
                        "--dbname=" + args->conninfo},
                       args->env);
  if (!r) return r.error();
  std::error_code ec;
  if (r->first != 0) {
    fs::remove(tmp, ec);
    return internal_error("postgres " + location + ": pg_dump failed (exit "
                          + std::to_string(r->first) + "): " + r->second);
  }
  if (auto st = fsync_file(tmp); !st) return st.error();
  fs::rename(tmp, out_file, ec);
  if (ec) return internal_error(out_file + ": cannot write backup: " + ec.message());
  return backup_result{location, *version, static_cast<std::uint64_t>(fs::file_size(out_file))};
}

std::string quote_ident(const std::string& name) {
  std::string out = "\"";
  for (char c : name)
    out += c == '"' ? std::string{"\"\""} : std::string{c};
  return out + "\"";
}

expected<restore_result> restore_postgres(const std::string& in_file, const std::string& url,
                                          bool force) {
  auto b = open_postgres({.url = url, .pool_size = 1, .migrate = false});
  if (!b) return b.error();
  const std::string location = (*b)->location();
  const int latest = (*b)->latest_schema_version();
  b->reset();
  auto tables = pg_tables(url, location);
  if (!tables) return tables.error();
  auto tool = find_pg_tool("pg_restore");
  if (!tool) return tool.error();
  // pg_restore --list reads the archive without touching the database: a bad file is found
  // before anything is dropped.
  auto args = pg_args_of(url, location);
  if (!args) return args.error();
  auto listed = run_program(*tool, {"--list", in_file}, args->env);
  if (!listed) return listed.error();
  if (listed->first != 0)
    return validation_error("restore from " + in_file + ": not a pg_dump archive (" + listed->second
                            + ")");
  if (!tables->empty()) {
    if (!force)
      return make_error(errc::conflict, "postgres " + location + ": the database has tables ("
                                            + std::to_string(tables->size())
                                            + "): pass --force to replace them");
    std::string drop = "BEGIN;";
    for (const auto& t : *tables)
      drop += "DROP TABLE IF EXISTS " + quote_ident(t) + " CASCADE;";
    drop += "COMMIT;";
    if (auto r = pg_column(url, location, drop); !r) return r.error();
  }
  auto r = run_program(*tool,
                       {"--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                        "--dbname=" + args->conninfo, in_file},
                       args->env);
  if (!r) return r.error();
  if (r->first != 0)
    return internal_error("postgres " + location + ": pg_restore failed (exit "
                          + std::to_string(r->first) + "): " + r->second);
  auto after = open_postgres({.url = url, .pool_size = 1, .migrate = false});
  if (!after) return after.error();
  auto v = (*after)->schema_version();
  if (!v) return v.error();
  if (*v > latest)
    return validation_error("postgres " + location + ": restored schema version "
                            + std::to_string(*v) + " is newer than this build knows ("
                            + std::to_string(latest) + ")");
  return restore_result{location, *v};
}

bool starts_with_bytes(const std::string& file, std::string_view magic) {
  std::ifstream in{file, std::ios::binary};
  std::string head(magic.size(), '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  return in && head == magic;
}

} // namespace

expected<store_target> resolve_store_url(const std::string& url) {
  if (url.empty())
    return validation_error("store URL is empty: expected sqlite:PATH, a path or "
                            "postgres://user@host:port/db");
  const auto scheme = scheme_of(url);
  if (scheme.empty()) return store_target{"sqlite", sqlite_file(url)};
  if (scheme == "sqlite") {
    auto path = url.substr(scheme.size() + 1);
    if (path.starts_with("//")) path.erase(0, 2);
    if (path.empty()) return validation_error("store URL '" + url + "': no database path");
    return store_target{"sqlite", sqlite_file(path)};
  }
  if (scheme == "postgres" || scheme == "postgresql") return store_target{"postgres", url};
  if (scheme == "memory")
    return validation_error("store URL '" + url
                            + "': the memory backend keeps nothing to "
                              "migrate, back up or restore");
  return validation_error("store URL '" + url + "': unknown scheme '" + std::string{scheme}
                          + "' (expected sqlite:PATH, a path or postgres://...)");
}

store_target data_dir_target(const std::string& dir) {
  return {"sqlite", (fs::path{dir} / "agentflow.db").string()};
}

int latest_schema_version(std::string_view kind) noexcept {
  const auto all = migrations_for(kind);
  return all.empty() ? 0 : all.back().number;
}

expected<std::unique_ptr<backend>> open_target(const store_target& t, bool migrate) {
  if (t.kind == "postgres") return open_postgres({.url = t.where, .migrate = migrate});
  return open_sqlite({.path = t.where, .migrate = migrate});
}

expected<std::vector<std::string>> list_tables(const store_target& t) {
  if (t.kind == "postgres") {
    auto b = open_postgres({.url = t.where, .pool_size = 1, .migrate = false});
    if (!b) return b.error();
    return pg_tables(t.where, (*b)->location());
  }
  std::error_code ec;
  if (!fs::is_regular_file(t.where, ec)) return missing_file(t.where);
  auto db = sqlite_open(t.where, SQLITE_OPEN_READONLY);
  if (!db) return db.error();
  return sqlite_tables(db->get(), t.where);
}

expected<backup_result> backup_store(const store_target& from, const std::string& out_file) {
  if (out_file.empty()) return validation_error("backup: no output file");
  if (from.kind == "postgres") return backup_postgres(from.where, out_file);
  return backup_sqlite(from.where, out_file);
}

expected<restore_result> restore_store(const std::string& in_file, const store_target& to,
                                       bool force) {
  std::error_code ec;
  if (!fs::is_regular_file(in_file, ec))
    return not_found_error("restore: backup file '" + in_file + "' does not exist");
  const bool is_sqlite = starts_with_bytes(in_file, std::string_view{"SQLite format 3\0", 16});
  const bool is_pg_dump = starts_with_bytes(in_file, "PGDMP");
  if (to.kind == "postgres") {
    if (is_sqlite)
      return validation_error("restore: '" + in_file
                              + "' is a SQLite backup, not a pg_dump "
                                "archive: restore it with --data-dir or --store sqlite:PATH");
    return restore_postgres(in_file, to.where, force);
  }
  if (is_pg_dump)
    return validation_error("restore: '" + in_file
                            + "' is a pg_dump archive: restore it with "
                              "--store postgres://...");
  if (!is_sqlite)
    return validation_error("restore: '" + in_file
                            + "' is not a backup written by af backup "
                              "(no SQLite header)");
  return restore_sqlite(in_file, to.where, force);
}

} // namespace af::store
