// The audit writer agent (af.audit): chains the records agents send it and group-commits them
// (one transaction per batch), replying with each record's seq and hash once durable.
#include "af/agent.hpp"
#include "af/metrics.hpp"
#include "af/store/audit.hpp"
#include "af/store/journal.hpp"
#include "af/v1/audit.pb.h"
#include "store_link.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <optional>

namespace af::store {

namespace {

class audit_writer : public agent_base<audit_writer> {
public:
  explicit audit_writer(audit_options opts) : opts_(std::move(opts)) {}

  static void define(handlers<audit_writer>& h) {
    h.kind("af.audit")
        .on(&audit_writer::on_append)
        .on(&audit_writer::on_flush)
        .on(&audit_writer::on_reopen)
        .on(&audit_writer::on_retry);
  }

  void on_start(context& ctx) override {
    if (auto c =
            ctx.metrics().counter("af_audit_records_total", "Audit records chained and committed"))
      records_ = *c;
    retry_.emplace("audit", opts_.retry, ctx.clock(), ctx.rng(), ctx.log(), &ctx.metrics());
    open(ctx);
  }

  void on_append(context& ctx, const v1::AuditAppend& r, responder<v1::AuditAppended> reply) {
    if (r.record().action().empty())
      return reply.fail(validation_error("audit append: record.action must not be empty"));
    for (const auto& m : r.more())
      if (m.action().empty())
        return reply.fail(validation_error("audit append: more.action must not be empty"));
    retry_->on_first_attempt();
    // The records stay in the message (not copied: a copy cost a dozen allocations each), which
    // the waiting records keep alive until they are committed or dropped.
    std::shared_ptr<const void> keep;
    if (const auto* e = ctx.current(); e != nullptr && e->fields().payload.get() == &r)
      keep = e->fields().payload;
    else
      keep = std::make_shared<const v1::AuditAppend>(r);
    const auto& msg = *static_cast<const v1::AuditAppend*>(keep.get());
    // The reply goes with the last record: it is committed last.
    auto take = [&](const v1::AuditRecord& rec, bool last) {
      pending_.push_back(
          {&rec, keep, ctx.tenant(), last ? std::optional{std::move(reply)} : std::nullopt});
    };
    take(msg.record(), msg.more().empty());
    for (int i = 0; i < msg.more_size(); ++i)
      take(msg.more(i), i + 1 == msg.more_size());
    // The flush arrives after every message already in the mailbox: all of them join the batch.
    if (!flush_scheduled_) {
      flush_scheduled_ = true;
      ctx.tell(ctx.self_ref(), v1::AuditFlush{});
    }
  }

  void on_reopen(context& ctx, const v1::AuditReopen&) {
    if (link_.db() == nullptr) open(ctx);
  }

  void on_retry(context& ctx, const v1::AuditRetry&) {
    backing_off_ = false;
    on_flush(ctx, v1::AuditFlush{});
  }

  void on_flush(context& ctx, const v1::AuditFlush&) {
    flush_scheduled_ = false;
    while (!pending_.empty() && !backing_off_) {
      if (link_.db() == nullptr) {
        drop(ctx, pending_.size(), unavailable());
        return;
      }
      if (!head_ && !read_head(ctx)) return; // read_head failed every pending append
      if (in_doubt_ && acknowledge_landed()) continue;
      auto n = std::min(pending_.size(), std::max<std::size_t>(opts_.max_batch, 1));
      const auto ts = ctx.now();
      std::vector<audit_row> rows;
      rows.reserve(n);
      auto prev = head_->hash;
      for (std::size_t i = 0; i < n; ++i) {
        const auto& w = pending_[i];
        rows.push_back(make_audit_row(*w.record, head_->seq + 1 + i, w.tenant, ts, prev));
        prev = rows.back().hash;
      }
      auto st = link_.db()->audit_append(rows);
      in_doubt_.reset();
      if (st) {
        head_ = audit_head{rows.back().seq, rows.back().hash};
        conflicts_in_row_ = 0;
        acknowledge(rows, n);
      } else if (st.error().code() == errc::conflict && conflicts_in_row_ < k_max_conflicts) {
        // Another writer on the same store (another node on one PostgreSQL database, another
        // process on one SQLite file) appended first: nothing of this batch was written. Chain
        // it again after the rows that are there now. Each conflict means some writer made
        // progress; the bound only stops a store that refuses every head it reports.
        ++conflicts_in_row_;
        head_.reset();
        ctx.log().debug("audit_append_conflict",
                        "another writer extended the chain; chaining the batch after it",
                        {{"records", static_cast<double>(n)},
                         {"error", st.error().to_string()},
                         {"conflicts_in_row", static_cast<double>(conflicts_in_row_)}});
        continue; // nothing written: the same records again, after the new head
      } else {
        // The head may have moved (another writer on the same store), or a transient failure
        // may hide a commit that landed: read it again before the next batch.
        store_error(ctx, st.error());
        head_.reset();
        std::uint32_t attempt = 1;
        for (std::size_t i = 0; i < n; ++i)
          attempt = std::max(attempt, pending_[i].attempt);
        auto d = retry_->next(st.error(), attempt);
        if (d.retry()) {
          ctx.log().warn(
              "audit_append_retry", "audit batch not written; retrying: " + st.error().to_string(),
              {{"records", static_cast<double>(n)},
               {"retry_in_ms", std::chrono::duration<double, std::milli>(d.delay).count()}});
          for (std::size_t i = 0; i < n; ++i)
            pending_[i].attempt = attempt + 1;
          in_doubt_ = std::move(rows);
          backing_off_ = true;
          ctx.schedule(d.delay, v1::AuditRetry{});
          return;
        }
        const auto e = retry_->give_up_error(d, st.error());
        ctx.log().error("audit_append_failed", "audit batch not written: " + e.to_string(),
                        {{"records", static_cast<double>(n)}});
        drop(ctx, n, e);
        continue;
      }
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    }
  }

  void on_stop(context& ctx) override {
    // Records taken in but not yet flushed (their flush message queues behind the stop) are
    // committed now: a node stopping right after an execution ended keeps the records of it.
    if (!pending_.empty() && !backing_off_ && link_.db() != nullptr)
      on_flush(ctx, v1::AuditFlush{});
    drop(ctx, pending_.size(), error{errc::transient, "audit writer stopped before commit"});
  }

  /// The first `n` waiting records cannot be written: each sender that asked gets the error,
  /// and the log names them (senders that told, like executors, get no reply).
  void drop(context& ctx, std::size_t n, const error& e) {
    if (n == 0) return;
    for (std::size_t i = 0; i < n; ++i) {
      const auto& rec = *pending_[i].record;
      ctx.log().error(
          "audit_record_dropped", "audit record not written: " + e.to_string(),
          {{"action", rec.action()}, {"subject", rec.subject()}, {"actor", rec.actor()}});
      if (pending_[i].reply) pending_[i].reply->fail(e);
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  }

private:
  struct waiting {
    const v1::AuditRecord* record;                     ///< in the message `keep` holds
    std::shared_ptr<const void> keep;                  ///< the AuditAppend it came in
    std::string tenant;                                ///< the request's tenant
    std::optional<responder<v1::AuditAppended>> reply; ///< the last record of an append only
    std::uint32_t attempt = 1;
  };

  /// After a failed commit, with the head read again: if the chain ends with the failed batch's
  /// last row, the commit landed (a connection lost after COMMIT was sent): acknowledge those
  /// records as written then. True when it did.
  bool acknowledge_landed() {
    auto rows = std::move(*in_doubt_);
    in_doubt_.reset();
    if (rows.empty() || head_->seq != rows.back().seq || head_->hash != rows.back().hash)
      return false;
    const auto n = std::min(rows.size(), pending_.size());
    acknowledge(rows, n);
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    return true;
  }

  /// Replies to the first `n` pending appends: their records are rows[0..n), committed.
  void acknowledge(const std::vector<audit_row>& rows, std::size_t n) {
    records_.inc(static_cast<double>(n));
    for (std::size_t i = 0; i < n; ++i) {
      if (!pending_[i].reply) continue; // told, not asked (executors): nobody to answer
      v1::AuditAppended out;
      out.set_seq(rows[i].seq);
      out.set_hash(std::string{rows[i].hash.begin(), rows[i].hash.end()});
      pending_[i].reply->reply(std::move(out));
    }
  }

  /// Continues the chain where the store ends. On failure fails every pending append.
  bool read_head(context& ctx) {
    auto h = link_.db()->audit_last();
    if (h) {
      head_ = *h;
      return true;
    }
    store_error(ctx, h.error());
    drop(ctx, pending_.size(), h.error());
    return false;
  }

  void open(context& ctx) {
    if (!link_.open<v1::AuditReopen>(ctx)) return;
    head_.reset();
    if (auto h = link_.db()->audit_last())
      head_ = *h;
    else
      store_error(ctx, h.error());
    ctx.log().info("audit_opened", "audit writer ready",
                   {{"backend", std::string{link_.db()->kind()}},
                    {"location", link_.db()->location()},
                    {"next_seq", static_cast<double>(head_ ? head_->seq + 1 : 0)}});
  }

  error unavailable() const { return link_.unavailable(); }
  void store_error(context& ctx, const error& e) { link_.count(ctx, e); }

  audit_options opts_;
  detail::store_link link_{opts_.open, "audit writer", "audit_unavailable"};
  std::optional<audit_head> head_;
  std::deque<waiting> pending_;
  bool flush_scheduled_ = false;
  bool backing_off_ = false;                       ///< a retry is scheduled: flushes wait for it
  std::optional<std::vector<audit_row>> in_doubt_; ///< the rows of the failed commit
  std::optional<sup::retry_policy> retry_;
  counter_handle records_;
  /// Conflicts in a row (another writer appended first); past the bound, the retry policy
  /// decides as for any other error.
  static constexpr std::uint32_t k_max_conflicts = 1000;
  std::uint32_t conflicts_in_row_ = 0;
};

} // namespace

sup::child_spec audit_child(audit_options opts) {
  const bool blocking = opts.blocking;
  auto c = sup::agent_child<audit_writer>(std::string{k_audit_agent}, std::move(opts));
  c.system = true;
  c.detached = blocking;
  c.shutdown = std::chrono::seconds(10);
  return c;
}

audit_options audit_options_from(const config& cfg) {
  audit_options ao;
  auto jo = journal_options_from(cfg);
  ao.open = std::move(jo.open);
  ao.blocking = jo.blocking;
  return ao;
}

} // namespace af::store
