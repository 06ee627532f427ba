// The audit chain (ARCHITECTURE.md invariant 5, docs/storage.md "Audit chain"): the writer agent
// (af.audit) that hash-chains af.v1.AuditRecord rows into the store, and the verifier.
#pragma once

#include "af/config.hpp"
#include "af/store/backend.hpp"
#include "af/sup/retry.hpp"
#include "af/sup/spec.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace af::v1 {
class AuditRecord;
} // namespace af::v1

namespace af::store {

/// The name the audit writer is registered under.
inline constexpr std::string_view k_audit_agent = "af.audit";

struct audit_options {
  /// Opens the backend; called on every (re)start of the writer. A failure is retried with
  /// backoff (appends meanwhile get `transient`), not fatal to the node.
  std::function<expected<std::unique_ptr<backend>>()> open;
  /// Records chained and committed in one transaction at most.
  std::size_t max_batch = 512;
  /// A batch whose commit failed with a transient error is retried by this policy: the writer
  /// reads the chain's head again and, if the failed commit did land after all (its last hash
  /// is the head), acknowledges it instead of chaining the records twice.
  sup::retry_options retry{};
  /// The backend's calls block: the writer runs detached (see journal_options::blocking).
  bool blocking = true;
};

/// The child spec to pass in node::options::system_services (under af.sup.system; detached when
/// the backend blocks).
[[nodiscard]] sup::child_spec audit_child(audit_options opts);

/// Audit options from a node's configuration: the same store as the journal (store_url).
[[nodiscard]] audit_options audit_options_from(const config& cfg);

// --- the chain -----------------------------------------------------------------------------------

/// The canonical bytes of a record: its deterministic Protobuf serialization.
[[nodiscard]] std::string canonical_bytes(const v1::AuditRecord& record);

/// SHA-256(prev_hash || record).
[[nodiscard]] sha256_digest chain_hash(const sha256_digest& prev_hash, std::string_view record);

/// The row for `record` (whose seq, tenant and ts_ns are already set) after `prev_hash`.
[[nodiscard]] audit_row make_audit_row(const v1::AuditRecord& record,
                                       const sha256_digest& prev_hash);

/// The same row as for a copy of `record` with `seq`, `tenant` and `ts` set, without the copy
/// when the sender left those three fields unset (as the writer's callers do).
[[nodiscard]] audit_row make_audit_row(const v1::AuditRecord& record, std::uint64_t seq,
                                       std::string_view tenant, time_point ts,
                                       const sha256_digest& prev_hash);

/// What is wrong with the chain at first_bad_seq.
enum class chain_fault {
  none,
  hash_mismatch,   ///< hash != SHA-256(prev_hash || record): the record or a hash was edited
  column_mismatch, ///< tenant/ts/actor/action/subject differ from the record's (or it is
                   ///< unreadable)
  broken_link,     ///< prev_hash != the previous row's hash: a row was removed or replaced
  gap,             ///< a seq is missing
  reordered,       ///< the row's seq differs from the seq inside its record: rows were swapped
};
[[nodiscard]] std::string_view to_string(chain_fault f) noexcept;

/// What a row shows on its own (its hash, and the record against its columns), without its
/// neighbours. Rows are independent here, so callers may check many at once in parallel.
[[nodiscard]] chain_fault check_row(const audit_row& row, bool check_columns = true);
[[nodiscard]] chain_fault check_row(const audit_row_view& row, bool check_columns = true);
/// The view of a row (valid while `row` is).
[[nodiscard]] audit_row_view view_of(const audit_row& row) noexcept;

struct verify_options {
  /// Rows read from the store at a time.
  std::size_t page_size = 16384;
  /// Compare the plain columns with the record (costs a Protobuf parse per row).
  bool check_columns = true;
  /// Returns the index of the first row of `rows` for which check_row(row, check_columns) is
  /// not `none` (rows.size() when none). Unset: a loop on the calling thread. `af audit verify`
  /// passes first_bad_row_parallel, which splits the rows over the cores.
  std::function<std::size_t(std::span<const audit_row> rows, bool check_columns)> first_bad_row;
  /// Read the next page on another thread while this page's rows are checked, so that the
  /// store's read time overlaps the hashing (the backend is still used by one thread at a time).
  /// `af audit verify` sets it.
  bool read_ahead = false;
  /// Opens a second connection to the same store. When set and the chain has at least
  /// 2 × split_min rows, the second half is read and checked on it, on another thread, while
  /// the first half is checked here (each half on one core, its rows checked in order): reading
  /// rows costs more than hashing them, so two readers are what makes use of two cores. The
  /// result is the one the sequential pass gives, first_bad_seq included.
  std::function<expected<std::unique_ptr<backend>>()> open_reader;
  std::uint64_t split_min = 4096;
};

/// check_row over `rows` split across `threads` threads (0: one per core; the calling thread is
/// one of them, and small inputs stay on it): the index of the first row that is not `none`
/// (rows.size() when none), as the sequential loop would find. For verify_options::first_bad_row.
[[nodiscard]] std::size_t first_bad_row_parallel(std::span<const audit_row> rows,
                                                 bool check_columns, unsigned threads = 0);

/// verify_options with rows checked on every core and pages read ahead.
[[nodiscard]] verify_options parallel_verify_options();
/// As `af audit verify` uses them: two readers (open_reader = `reader`), each checking its half.
[[nodiscard]] verify_options
parallel_verify_options(std::function<expected<std::unique_ptr<backend>>()> reader);

struct verify_result {
  std::uint64_t count = 0;                    ///< records that verified (all of them when intact)
  std::optional<std::uint64_t> first_bad_seq; ///< the first chain position that does not match
  chain_fault fault = chain_fault::none;
  std::string why; ///< a sentence for people, naming the seq and what differs
  [[nodiscard]] bool intact() const noexcept { return !first_bad_seq.has_value(); }
};

/// Reads the whole chain in seq order and checks every row's hash and record and every link.
/// A broken chain is a result (first_bad_seq set), not an error; errors are store failures.
/// first_bad_seq is the chain position (1-based) where the stored rows first stop forming the
/// chain: the edited row, the seq of a deleted row, the first of two swapped rows, an inserted row.
[[nodiscard]] expected<verify_result> verify_chain(backend& db, const verify_options& opts = {});

} // namespace af::store
