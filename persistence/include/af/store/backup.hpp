// Offline maintenance of a store for `af db`, `af backup` and `af restore`: resolving a store
// URL without opening it, listing tables, consistent backups and checked restores. CLI-only.
//
// These calls block and may spawn pg_dump/pg_restore: never call them from actor code.
#pragma once

#include "af/error.hpp"
#include "af/store/backend.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace af::store {

/// A store named by a URL (open_url's rules) or a data directory, not opened yet.
struct store_target {
  std::string kind; ///< "sqlite" or "postgres" (memory: has nothing to maintain)
  /// SQLite: the database file. PostgreSQL: the URL as given (it may hold a password: never
  /// print it; print an opened backend's location() instead).
  std::string where;
};

/// Resolves "sqlite:PATH", a plain path (a file or a data directory holding agentflow.db) or
/// "postgres://..."; "memory:" and unknown schemes are `validation` errors naming the URL.
[[nodiscard]] expected<store_target> resolve_store_url(const std::string& url);
/// DIR/agentflow.db.
[[nodiscard]] store_target data_dir_target(const std::string& dir);

/// The newest migration this build knows for "sqlite" or "postgres" (0 for anything else),
/// without opening anything.
[[nodiscard]] int latest_schema_version(std::string_view kind) noexcept;

/// Opens the target; `migrate` = false leaves the schema as it is (for `af db migrate`).
[[nodiscard]] expected<std::unique_ptr<backend>> open_target(const store_target& t, bool migrate);

/// The tables in the store (SQLite: the main database; PostgreSQL: the current schema), sorted.
[[nodiscard]] expected<std::vector<std::string>> list_tables(const store_target& t);

struct backup_result {
  std::string location;   ///< the source, without password
  int schema_version = 0; ///< of the backup
  std::uint64_t bytes = 0;
};

/// Writes a consistent copy of a live store to `out_file` (written beside it, then renamed; an
/// existing file is replaced). SQLite: the online backup API, a snapshot taken while writers go
/// on. PostgreSQL: `pg_dump --format=custom` (a `not_found` error when pg_dump is missing).
[[nodiscard]] expected<backup_result> backup_store(const store_target& from,
                                                   const std::string& out_file);

struct restore_result {
  std::string location;   ///< the target, without password
  int schema_version = 0; ///< of the restored store
};

/// Restores a file written by backup_store into `to`. A target that exists (a SQLite file, or a
/// PostgreSQL schema with tables) is a `conflict` unless `force` (then it is replaced). The
/// restored store's schema version must be one this build knows (else `validation`).
[[nodiscard]] expected<restore_result> restore_store(const std::string& in_file,
                                                     const store_target& to, bool force);

} // namespace af::store
