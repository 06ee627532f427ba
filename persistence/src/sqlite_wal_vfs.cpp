// Gathered WAL writes. SQLite writes each WAL frame as two pwrite calls (the 24-byte frame
// header, then the page): a group commit of 64 appends dirties ~60 pages, so ~120 system calls
// before the one sync, and a system call is expensive on a virtual machine. This VFS wraps the
// default one; for WAL files only, writes that continue the previous one are kept in a buffer and
// issued as one write when:
//  - the page of a commit frame (a frame header with a non-zero "database size" field, the WAL
//    file format's commit marker) has been written: a commit is on the file before SQLite
//    publishes it in the wal-index (where readers, checkpoints and other processes look) and
//    before it syncs, whatever `synchronous` is;
//  - SQLite does anything else with the file (read, sync, truncate, size, file control, close),
//    or writes somewhere else, or the buffer holds k_max_buffer bytes.
// So every byte is on the file whenever SQLite could observe the file or another connection could
// read it; only frames of a transaction still being written wait in memory, and a crash loses
// those anyway (they are not committed). Other files (the database, its -shm) are the default
// VFS's own objects.
#include "sqlite_wal_vfs.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

namespace af::store {

namespace {

constexpr sqlite3_int64 k_max_buffer = 1 << 20;
// The largest write handed to the default VFS: its unix write masks the length with 0x1ffff
// (asserting that it fits), so a longer one would be cut and reported as a full disk.
constexpr sqlite3_int64 k_max_write = 1 << 16;
constexpr int k_frame_header = 24; // WAL file format: page number, commit size, salts, checksums

std::atomic<std::uint64_t> g_requested{0}; // diagnostics only
std::atomic<std::uint64_t> g_issued{0};

struct wal_file {
  sqlite3_file base;   // methods: k_wal_methods
  sqlite3_file* real;  // the default VFS's file, in the bytes after this struct
  char* buf;           // sqlite3_malloc'ed, k_max_buffer bytes, or null until the first write
  sqlite3_int64 start; // file offset of buf[0]
  sqlite3_int64 len;   // bytes pending in buf
  bool commit_next;    // the last write was the header of a commit frame
};

sqlite3_vfs* real_vfs(sqlite3_vfs* v) { return static_cast<sqlite3_vfs*>(v->pAppData); }
wal_file* as_wal(sqlite3_file* f) { return reinterpret_cast<wal_file*>(f); }

int write_through(wal_file* w, const char* data, sqlite3_int64 n, sqlite3_int64 off) {
  for (sqlite3_int64 done = 0; done < n;) {
    const auto part = std::min(n - done, k_max_write);
    g_issued.fetch_add(1, std::memory_order_relaxed);
    if (int rc = w->real->pMethods->xWrite(w->real, data + done, static_cast<int>(part),
                                           off + done);
        rc != SQLITE_OK)
      return rc;
    done += part;
  }
  return SQLITE_OK;
}

int flush(wal_file* w) {
  if (w->len == 0) return SQLITE_OK;
  const auto n = w->len;
  w->len = 0;
  return write_through(w, w->buf, n, w->start);
}

int wal_close(sqlite3_file* f) {
  auto* w = as_wal(f);
  int rc = flush(w);
  int rc2 = w->real->pMethods->xClose(w->real);
  sqlite3_free(w->buf);
  w->buf = nullptr;
  return rc != SQLITE_OK ? rc : rc2;
}

int wal_read(sqlite3_file* f, void* out, int n, sqlite3_int64 off) {
  auto* w = as_wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xRead(w->real, out, n, off);
}

int wal_write(sqlite3_file* f, const void* data, int n, sqlite3_int64 off) {
  auto* w = as_wal(f);
  g_requested.fetch_add(1, std::memory_order_relaxed);
  const bool commit_page = w->commit_next;
  w->commit_next = false;
  if (n == k_frame_header) {
    const auto* h = static_cast<const unsigned char*>(data);
    w->commit_next = (h[4] | h[5] | h[6] | h[7]) != 0;
  }
  const bool follows = w->len > 0 && off == w->start + w->len;
  if (!follows || w->len + n > k_max_buffer) {
    if (int rc = flush(w); rc != SQLITE_OK) return rc;
  }
  if (w->buf == nullptr && n <= k_max_buffer) {
    w->buf = static_cast<char*>(sqlite3_malloc64(k_max_buffer));
    if (w->buf == nullptr) return SQLITE_IOERR_NOMEM;
  }
  if (n > k_max_buffer) // larger than the buffer: straight through
    return write_through(w, static_cast<const char*>(data), n, off);
  if (w->len == 0) w->start = off;
  std::memcpy(w->buf + w->len, data, static_cast<std::size_t>(n));
  w->len += n;
  return commit_page ? flush(w) : SQLITE_OK;
}

int wal_truncate(sqlite3_file* f, sqlite3_int64 size) {
  auto* w = as_wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xTruncate(w->real, size);
}

int wal_sync(sqlite3_file* f, int flags) {
  auto* w = as_wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xSync(w->real, flags);
}

int wal_file_size(sqlite3_file* f, sqlite3_int64* size) {
  auto* w = as_wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xFileSize(w->real, size);
}

int wal_lock(sqlite3_file* f, int level) {
  auto* w = as_wal(f);
  return w->real->pMethods->xLock(w->real, level);
}

int wal_unlock(sqlite3_file* f, int level) {
  auto* w = as_wal(f);
  return w->real->pMethods->xUnlock(w->real, level);
}

int wal_check_reserved(sqlite3_file* f, int* out) {
  auto* w = as_wal(f);
  return w->real->pMethods->xCheckReservedLock(w->real, out);
}

int wal_file_control(sqlite3_file* f, int op, void* arg) {
  auto* w = as_wal(f);
  if (int rc = flush(w); rc != SQLITE_OK) return rc;
  return w->real->pMethods->xFileControl(w->real, op, arg);
}

int wal_sector_size(sqlite3_file* f) {
  auto* w = as_wal(f);
  return w->real->pMethods->xSectorSize(w->real);
}

int wal_device_characteristics(sqlite3_file* f) {
  auto* w = as_wal(f);
  return w->real->pMethods->xDeviceCharacteristics(w->real);
}

// Version 1: a WAL file is never memory-mapped nor given shared-memory calls.
const sqlite3_io_methods k_wal_methods = {
    1,
    wal_close,
    wal_read,
    wal_write,
    wal_truncate,
    wal_sync,
    wal_file_size,
    wal_lock,
    wal_unlock,
    wal_check_reserved,
    wal_file_control,
    wal_sector_size,
    wal_device_characteristics,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

int vfs_open(sqlite3_vfs* v, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  auto* real = real_vfs(v);
  if ((flags & SQLITE_OPEN_WAL) == 0) return real->xOpen(real, name, f, flags, out_flags);
  auto* w = as_wal(f);
  w->real = reinterpret_cast<sqlite3_file*>(w + 1);
  w->buf = nullptr;
  w->start = 0;
  w->len = 0;
  w->commit_next = false;
  int rc = real->xOpen(real, name, w->real, flags, out_flags);
  // SQLite calls xClose only when pMethods is set; the default VFS sets it even on failure.
  w->base.pMethods = w->real->pMethods != nullptr ? &k_wal_methods : nullptr;
  if (rc != SQLITE_OK && w->real->pMethods != nullptr) {
    w->real->pMethods->xClose(w->real);
    w->base.pMethods = nullptr;
  }
  return rc;
}

int vfs_delete(sqlite3_vfs* v, const char* name, int sync_dir) {
  return real_vfs(v)->xDelete(real_vfs(v), name, sync_dir);
}
int vfs_access(sqlite3_vfs* v, const char* name, int flags, int* out) {
  return real_vfs(v)->xAccess(real_vfs(v), name, flags, out);
}
int vfs_full_pathname(sqlite3_vfs* v, const char* name, int n, char* out) {
  return real_vfs(v)->xFullPathname(real_vfs(v), name, n, out);
}
void* vfs_dl_open(sqlite3_vfs* v, const char* name) {
  return real_vfs(v)->xDlOpen(real_vfs(v), name);
}
void vfs_dl_error(sqlite3_vfs* v, int n, char* out) { real_vfs(v)->xDlError(real_vfs(v), n, out); }
void (*vfs_dl_sym(sqlite3_vfs* v, void* h, const char* sym))(void) {
  return real_vfs(v)->xDlSym(real_vfs(v), h, sym);
}
void vfs_dl_close(sqlite3_vfs* v, void* h) { real_vfs(v)->xDlClose(real_vfs(v), h); }
int vfs_randomness(sqlite3_vfs* v, int n, char* out) {
  return real_vfs(v)->xRandomness(real_vfs(v), n, out);
}
int vfs_sleep(sqlite3_vfs* v, int us) { return real_vfs(v)->xSleep(real_vfs(v), us); }
int vfs_current_time(sqlite3_vfs* v, double* out) {
  return real_vfs(v)->xCurrentTime(real_vfs(v), out);
}
int vfs_last_error(sqlite3_vfs* v, int n, char* out) {
  return real_vfs(v)->xGetLastError(real_vfs(v), n, out);
}
int vfs_current_time64(sqlite3_vfs* v, sqlite3_int64* out) {
  return real_vfs(v)->xCurrentTimeInt64(real_vfs(v), out);
}

} // namespace

const char* sqlite_wal_vfs_name() {
  static constexpr const char* k_name = "af-wal-gather";
  // Registered once per process and never changed afterwards (SQLite keeps the pointer).
  static sqlite3_vfs vfs{};
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
    if (real == nullptr || real->iVersion < 2) return;
    vfs.iVersion = 2;
    vfs.szOsFile = static_cast<int>(sizeof(wal_file)) + real->szOsFile;
    vfs.mxPathname = real->mxPathname;
    vfs.zName = k_name;
    vfs.pAppData = real;
    vfs.xOpen = vfs_open;
    vfs.xDelete = vfs_delete;
    vfs.xAccess = vfs_access;
    vfs.xFullPathname = vfs_full_pathname;
    vfs.xDlOpen = vfs_dl_open;
    vfs.xDlError = vfs_dl_error;
    vfs.xDlSym = vfs_dl_sym;
    vfs.xDlClose = vfs_dl_close;
    vfs.xRandomness = vfs_randomness;
    vfs.xSleep = vfs_sleep;
    vfs.xCurrentTime = vfs_current_time;
    vfs.xGetLastError = vfs_last_error;
    vfs.xCurrentTimeInt64 = vfs_current_time64;
    ok = sqlite3_vfs_register(&vfs, 0) == SQLITE_OK;
  });
  return ok ? k_name : nullptr;
}

sqlite_wal_write_counts sqlite_wal_writes() {
  return {g_requested.load(std::memory_order_relaxed), g_issued.load(std::memory_order_relaxed)};
}

} // namespace af::store
