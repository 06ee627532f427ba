// A SQLite VFS that forwards everything to the default one but gathers the writes of a
// transaction to its write-ahead log into few large writes (sqlite_wal_vfs.cpp says how and why).
#pragma once

#include <cstdint>

namespace af::store {

/// The name of the VFS to pass to sqlite3_open_v2, registered (not as default) on first use.
/// nullptr when it could not be registered: open with the default VFS then.
[[nodiscard]] const char* sqlite_wal_vfs_name();

/// Writes to WAL files through the VFS since the process started: those SQLite asked for and
/// those issued to the file system (diagnostics and tests).
struct sqlite_wal_write_counts {
  std::uint64_t requested = 0;
  std::uint64_t issued = 0;
};
[[nodiscard]] sqlite_wal_write_counts sqlite_wal_writes();

} // namespace af::store
