// The journal agent: group commit of appends, reads, stream listing and snapshots, over one
// backend. The agent runs on the scheduler; a blocking backend's calls run on a thread of their
// own (backend_thread.hpp), one at a time, in the order the agent made them.
#include "af/store/journal.hpp"

#include "af/agent.hpp"
#include "af/metrics.hpp"
#include "af/node.hpp"
#include "af/v1/store.pb.h"
#include "backend_thread.hpp"
#include "store_link.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <unordered_set>

namespace af::store {

namespace {

std::int64_t ns_of(time_point t) { return t.time_since_epoch().count(); }

sha256_digest digest_of(const std::string& bytes) {
  sha256_digest d{};
  if (bytes.size() == d.size()) std::copy(bytes.begin(), bytes.end(), d.begin());
  return d;
}

std::string bytes_of(const sha256_digest& d) {
  if (std::all_of(d.begin(), d.end(), [](std::uint8_t b) { return b == 0; })) return {};
  return {d.begin(), d.end()};
}

constexpr std::uint32_t k_default_max = 1000;
/// Holds shorter than this are not started (journal_options::hold_fraction).
constexpr auto k_min_hold = std::chrono::microseconds(50);

class journal_agent : public agent_base<journal_agent> {
public:
  explicit journal_agent(journal_options opts) : opts_(std::move(opts)) {}

  static void define(handlers<journal_agent>& h) {
    h.kind("af.journal")
        .on(&journal_agent::on_append)
        .on(&journal_agent::on_flush)
        .on(&journal_agent::on_backend_done)
        .on(&journal_agent::on_reopen)
        .on(&journal_agent::on_retry)
        .on(&journal_agent::on_compact)
        .on(&journal_agent::on_read)
        .on(&journal_agent::on_list)
        .on(&journal_agent::on_save_snapshot)
        .on(&journal_agent::on_load_snapshot);
  }

  void on_start(context& ctx) override {
    auto& m = ctx.metrics();
    if (auto h = m.histogram("af_journal_append_seconds",
                             "Time to commit one group of appends (one transaction and sync)", {},
                             metrics::exponential_buckets(1e-5, 3.16227766, 13)))
      append_seconds_ = *h;
    if (auto h = m.histogram("af_journal_batch_size", "Appends committed per transaction", {},
                             metrics::exponential_buckets(1, 2, 11)))
      batch_size_ = *h;
    if (auto c = m.counter("af_journal_conflicts_total", "Appends refused: stale expected version"))
      conflicts_ = *c;
    for (auto [kind, slot] :
         {std::pair{"deleted", &compacted_deleted_}, std::pair{"pruned", &compacted_pruned_}})
      if (auto c = m.counter("af_journal_compacted_streams_total",
                             "Streams compacted by retention: finished streams deleted whole, "
                             "open streams pruned up to their snapshot",
                             {{"kind", kind}}))
        *slot = *c;
    if (auto c = m.counter("af_journal_compacted_events_total", "Events deleted by retention"))
      compacted_events_ = *c;
    retry_.emplace("journal", opts_.retry, ctx.clock(), ctx.rng(), ctx.log(), &ctx.metrics());
    if (opts_.blocking && ctx.threads_allowed()) {
      auto* node = &ctx.this_node();
      worker_ =
          std::make_unique<detail::backend_thread>("af.journal.db", [node, self = ctx.self_ref()] {
            node->tell(self, v1::JournalBackendDone{});
          });
    }
    open(ctx);
    if (opts_.retention > duration::zero())
      ctx.schedule(opts_.compact_interval, v1::JournalCompact{});
  }

  // --- appends: group commit -----------------------------------------------------------------

  void on_append(context& ctx, const v1::AppendRequest& r, responder<v1::AppendResult> reply) {
    if (r.stream().empty()) return reply.fail(validation_error("append: stream must not be empty"));
    if (r.events_size() == 0)
      return reply.fail(validation_error("append to '" + r.stream() + "': no events"));
    append_request req;
    req.stream = r.stream();
    req.tenant = ctx.tenant();
    req.expected_version = r.any_version() ? k_any_version : r.expected_version();
    req.finish = r.finish();
    req.events.reserve(static_cast<std::size_t>(r.events_size()));
    for (const auto& e : r.events()) {
      if (e.type().empty())
        return reply.fail(validation_error("append to '" + r.stream() + "': an event has no type"));
      if (!e.envelope_hash().empty() && e.envelope_hash().size() != 32)
        return reply.fail(
            validation_error("append to '" + r.stream() + "': envelope_hash must be 32 bytes"));
      req.events.push_back({e.type(), e.payload(), digest_of(e.envelope_hash())});
    }
    retry_->on_first_attempt();
    const bool was_awaited = awaited_.erase(req.stream) > 0;
    pending_.push_back({std::move(req), std::move(reply), 1});
    if (committing_) return; // the commit in flight flushes what is pending when it is done
    if (holding_) {
      // Every stream of the last commit is back: commit now rather than at the hold's end.
      if (was_awaited && awaited_.empty()) {
        holding_ = false; // the hold's timer finds it over
        request_flush(ctx);
      }
      return;
    }
    request_flush(ctx);
  }

  /// The flush arrives after every message already in the mailbox: all of them join the batch.
  void request_flush(context& ctx) {
    if (flush_scheduled_) return;
    flush_scheduled_ = true;
    ctx.tell(ctx.self_ref(), v1::JournalFlush{});
  }

  /// Whether to wait for the streams the last commit replied to (journal_options::hold_fraction)
  /// before committing what is pending; starts the hold's timer if so.
  bool hold(context& ctx) {
    if (opts_.hold_fraction <= 0 || awaited_.empty() || pending_.empty()
        || pending_.size() >= opts_.max_batch || link_.db() == nullptr)
      return false;
    // Enough is waiting already to be worth a commit of its own: appenders that arrive while
    // it runs join the next one. Holding then only idles the store (100 executions on SQLite:
    // ~40 appends waited up to a millisecond each round for the ~60 streams just answered).
    if (pending_.size() * 2 >= awaited_.size()) return false;
    const auto wait = std::min<duration>(
        opts_.hold_max, std::chrono::duration_cast<duration>(last_commit_ * opts_.hold_fraction));
    // A commit that fast (the memory store, a page-cache-only SQLite) is not worth a timer.
    if (wait < k_min_hold) return false;
    holding_ = true;
    v1::JournalFlush end;
    end.set_hold(++hold_number_);
    ctx.schedule(wait, end);
    return true;
  }

  void on_reopen(context& ctx, const v1::JournalReopen&) {
    if (link_.db() == nullptr) open(ctx);
  }

  void on_flush(context& ctx, const v1::JournalFlush& f) {
    const bool hold_ended = f.hold() != 0;
    if (hold_ended) {
      if (!holding_ || f.hold() != hold_number_) return; // that hold ended already
      holding_ = false;                                  // its time is up: commit what is there
    } else {
      flush_scheduled_ = false;
    }
    if (committing_) return; // the commit in flight flushes what is pending when it is done
    if (!hold_ended && (holding_ || hold(ctx))) return; // the hold commits when it ends
    awaited_.clear();
    // On the scheduler's thread (the memory store) each commit completes at once and the loop
    // takes the next; with a backend thread the first one is in flight when it returns.
    while (!pending_.empty() && !committing_) {
      if (link_.db() == nullptr) {
        for (auto& p : pending_)
          p.reply.fail(unavailable());
        pending_.clear();
        return;
      }
      commit(ctx);
    }
  }

  /// Results of the backend thread's calls, in the order they were made.
  void on_backend_done(context& ctx, const v1::JournalBackendDone&) {
    if (worker_) worker_->run_done(ctx);
  }

  /// Runs `work(backend&)` on the backend thread (else right here) and `then(ctx, result)` back
  /// on the agent. The backend is open (callers check link_.db()) and stays open.
  template <class Work, class Then>
  void call(context& ctx, Work work, Then then) {
    auto* db = link_.db();
    if (!worker_) {
      then(ctx, work(*db));
      return;
    }
    worker_->post([db, work = std::move(work), then = std::move(then)]() mutable {
      auto r = std::make_shared<decltype(work(*db))>(work(*db));
      return detail::backend_thread::completion{
          [then = std::move(then), r](context& c) mutable { then(c, std::move(*r)); }};
    });
  }

  struct commit_outcome {
    std::vector<expected<append_result>> results;
    std::vector<append_request> batch; ///< back from the call, for retries
    duration took{};
  };

  /// One transaction of the first (up to max_batch) pending appends.
  void commit(context& ctx) {
    const auto n = std::min(pending_.size(), opts_.max_batch);
    std::vector<append_request> batch;
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
      batch.push_back(std::move(pending_[i].req)); // moved back below if it is retried
    committing_ = true;
    call(
        ctx,
        [batch = std::move(batch), now = ctx.now(), clk = &ctx.clock()](backend& db) mutable {
          commit_outcome o;
          const auto t0 = clk->monotonic();
          o.results = db.append_batch(batch, now);
          o.took = clk->monotonic() - t0;
          o.batch = std::move(batch);
          return o;
        },
        [this, n](context& c, commit_outcome o) { committed(c, n, std::move(o)); });
  }

  /// Replies to the appends of a commit (or schedules their retry).
  void committed(context& ctx, std::size_t n, commit_outcome o) {
    committing_ = false;
    last_commit_ = o.took;
    append_seconds_.observe(std::chrono::duration<double>(last_commit_).count());
    batch_size_.observe(static_cast<double>(n));
    auto& results = o.results;
    auto& batch = o.batch;
    for (std::size_t i = 0; i < n; ++i) {
      auto& r = results[i];
      auto& reply = pending_[i].reply;
      if (r) {
        if (!batch[i].finish) awaited_.insert(batch[i].stream);
        v1::AppendResult out;
        out.set_first_version(r->first_version);
        out.set_last_version(r->last_version);
        out.set_committed_at_ns(ns_of(r->committed_at));
        reply.reply(std::move(out));
        continue;
      }
      if (r.error().code() == errc::conflict) {
        conflicts_.inc();
        reply.fail(r.error());
        continue;
      }
      store_error(ctx, r.error());
      auto& w = pending_[i];
      if (w.req.expected_version == k_any_version) {
        reply.fail(r.error());
        continue;
      }
      auto d = retry_->next(r.error(), w.attempt);
      if (!d.retry()) {
        reply.fail(retry_->give_up_error(d, r.error()));
        continue;
      }
      ++w.attempt;
      w.req = std::move(batch[i]); // append_batch left it as it was
      retrying_.push_back({std::move(w), ctx.monotonic() + d.delay});
      if (!stopping_) ctx.schedule(d.delay, v1::JournalRetry{});
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
    // Appends that came in during a commit on the backend thread: the usual flush (and hold).
    if (worker_ && !pending_.empty() && !stopping_) request_flush(ctx);
  }

  /// Appends whose backoff has passed join the next batch.
  void on_retry(context& ctx, const v1::JournalRetry&) {
    const auto now = ctx.monotonic();
    bool any = false;
    for (auto it = retrying_.begin(); it != retrying_.end();) {
      if (it->due <= now) {
        pending_.push_back(std::move(it->w));
        it = retrying_.erase(it);
        any = true;
      } else {
        ++it;
      }
    }
    if (any && !holding_) request_flush(ctx);
  }

  // --- retention -----------------------------------------------------------------------------

  /// One compaction step (one transaction); the next step comes right after the messages that
  /// arrived meanwhile when there is more to do, else after the interval.
  void on_compact(context& ctx, const v1::JournalCompact&) {
    if (stopping_) return;
    if (link_.db() == nullptr) {
      ctx.schedule(opts_.compact_interval, v1::JournalCompact{});
      return;
    }
    compact_options co;
    co.now = ctx.now();
    co.retention = opts_.retention;
    co.max_streams = opts_.compact_batch;
    call(
        ctx,
        [co, clk = &ctx.clock()](backend& db) {
          const auto t0 = clk->monotonic();
          auto r = db.compact(co);
          return std::pair{std::move(r), clk->monotonic() - t0};
        },
        [this](context& c, std::pair<expected<compact_result>, duration> out) {
          compacted(c, out.first, out.second);
        });
  }

  void compacted(context& ctx, const expected<compact_result>& r, duration took) {
    auto next = opts_.compact_interval;
    if (!r) {
      store_error(ctx, r.error());
      ctx.log().warn("journal_compact_failed", "compaction failed: " + r.error().to_string());
    } else {
      compacted_deleted_.inc(static_cast<double>(r->streams_deleted));
      compacted_pruned_.inc(static_cast<double>(r->streams_pruned));
      compacted_events_.inc(static_cast<double>(r->events_deleted));
      if (r->streams_deleted + r->streams_pruned > 0)
        ctx.log().info("journal_compacted", "retention compacted the journal",
                       {{"streams_deleted", static_cast<std::int64_t>(r->streams_deleted)},
                        {"streams_pruned", static_cast<std::int64_t>(r->streams_pruned)},
                        {"events_deleted", static_cast<std::int64_t>(r->events_deleted)},
                        {"ms", std::chrono::duration<double, std::milli>(took).count()}});
      if (r->more) next = duration::zero();
    }
    if (stopping_) return;
    if (next == duration::zero())
      ctx.tell(ctx.self_ref(), v1::JournalCompact{});
    else
      ctx.schedule(next, v1::JournalCompact{});
  }

  // --- reads -----------------------------------------------------------------------------------

  /// Replies with `then`'s result once `work` has run on the backend (see call); a backend
  /// error is counted in af_store_errors_total.
  template <class Reply, class Work>
  void answer(context& ctx, responder<Reply> reply, Work work) {
    if (link_.db() == nullptr) return reply.fail(unavailable());
    call(ctx, std::move(work), [this, reply](context& c, expected<Reply> out) mutable {
      if (out)
        reply.reply(std::move(*out));
      else
        reply.fail(store_error(c, out.error()));
    });
  }

  void on_read(context& ctx, const v1::ReadRequest& r, responder<v1::ReadResult> reply) {
    answer(ctx, std::move(reply), [r](backend& db) -> expected<v1::ReadResult> {
      auto ev = db.read(r.stream(), std::max<std::uint64_t>(r.from_version(), 1),
                        r.max() != 0 ? r.max() : k_default_max);
      if (!ev) return ev.error();
      auto v = db.version(r.stream());
      if (!v) return v.error();
      v1::ReadResult out;
      out.set_stream_version(*v);
      for (auto& e : *ev) {
        auto* o = out.add_events();
        o->set_stream(std::move(e.stream));
        o->set_version(e.version);
        o->set_tenant(std::move(e.tenant));
        o->set_type(std::move(e.type));
        o->set_payload(std::move(e.payload));
        o->set_envelope_hash(bytes_of(e.envelope_hash));
        o->set_committed_at_ns(ns_of(e.committed_at));
      }
      return out;
    });
  }

  void on_list(context& ctx, const v1::ListStreamsRequest& r,
               responder<v1::ListStreamsResult> reply) {
    answer(ctx, std::move(reply),
           [r, tenant = r.all_tenants() ? std::string{} : ctx.tenant()](
               backend& db) -> expected<v1::ListStreamsResult> {
             auto s = db.list_streams(r.prefix(), tenant, r.after(),
                                      r.max() != 0 ? r.max() : k_default_max);
             if (!s) return s.error();
             v1::ListStreamsResult out;
             for (auto& i : *s) {
               auto* o = out.add_streams();
               o->set_stream(std::move(i.stream));
               o->set_tenant(std::move(i.tenant));
               o->set_version(i.version);
               o->set_pruned_through(i.pruned_through);
               if (i.finished_at) o->set_finished_at_ns(ns_of(*i.finished_at));
             }
             return out;
           });
  }

  void on_save_snapshot(context& ctx, const v1::SaveSnapshotRequest& r,
                        responder<v1::SnapshotResult> reply) {
    snapshot_record s{r.stream(), ctx.tenant(), r.version(), r.type(), r.payload(), ctx.now()};
    answer(ctx, std::move(reply), [s = std::move(s)](backend& db) -> expected<v1::SnapshotResult> {
      if (auto st = db.save_snapshot(s); !st) return st.error();
      v1::SnapshotResult out;
      out.set_found(true);
      out.set_version(s.version);
      out.set_type(s.type);
      out.set_taken_at_ns(ns_of(s.taken_at));
      return out;
    });
  }

  void on_load_snapshot(context& ctx, const v1::LoadSnapshotRequest& r,
                        responder<v1::SnapshotResult> reply) {
    answer(ctx, std::move(reply),
           [stream = r.stream()](backend& db) -> expected<v1::SnapshotResult> {
             auto s = db.load_snapshot(stream);
             if (!s) return s.error();
             v1::SnapshotResult out;
             if (!*s) return out;
             out.set_found(true);
             out.set_version((*s)->version);
             out.set_type(std::move((*s)->type));
             out.set_payload(std::move((*s)->payload));
             out.set_taken_at_ns(ns_of((*s)->taken_at));
             return out;
           });
  }

  void on_stop(context& ctx) override {
    stopping_ = true;
    if (worker_) {
      // What the backend thread has taken commits (or fails) before the agent goes, and its
      // callers get their replies.
      worker_->stop();
      worker_->run_done(ctx);
    }
    for (auto& p : pending_)
      p.reply.fail(error{errc::transient, "journal stopped before commit"});
    pending_.clear();
    for (auto& r : retrying_)
      r.w.reply.fail(error{errc::transient, "journal stopped before the retry of a failed commit"});
    retrying_.clear();
  }

private:
  struct waiting {
    append_request req;
    responder<v1::AppendResult> reply;
    std::uint32_t attempt = 1;
  };
  struct backing_off {
    waiting w;
    duration due; ///< monotonic time of the next attempt
  };

  void open(context& ctx) {
    if (!link_.open<v1::JournalReopen>(ctx)) return;
    ctx.log().info(
        "journal_opened", "journal ready",
        {{"backend", std::string{link_.db()->kind()}}, {"location", link_.db()->location()}});
  }

  error unavailable() const { return link_.unavailable(); }
  error store_error(context& ctx, const error& e) { return link_.count(ctx, e); }

  journal_options opts_;
  detail::store_link link_{opts_.open, "journal", "journal_unavailable"};
  std::deque<waiting> pending_;
  std::vector<backing_off> retrying_;
  std::optional<sup::retry_policy> retry_;
  counter_handle compacted_deleted_, compacted_pruned_, compacted_events_;
  bool flush_scheduled_ = false;
  /// Streams the last commit replied to that have not appended again, the hold on the commit
  /// that waits for them (numbered, so that the timer of an earlier hold is told apart), and
  /// how long the last append_batch call took.
  std::unordered_set<std::string> awaited_;
  bool holding_ = false;
  std::uint64_t hold_number_ = 0;
  duration last_commit_{};
  histogram_handle append_seconds_, batch_size_;
  /// A commit is on the backend thread: appends wait for it to end.
  bool committing_ = false;
  bool stopping_ = false;
  counter_handle conflicts_;
  /// The blocking backend's calls (null for one that never blocks). Last member: destroyed first,
  /// it finishes its calls while everything they use still exists.
  std::unique_ptr<detail::backend_thread> worker_;
};

} // namespace

sup::child_spec journal_child(journal_options opts) {
  // Not detached: the agent itself never blocks (a blocking backend's calls run on a thread of
  // their own), so appends reach it through the scheduler instead of waking a thread each.
  auto c = sup::agent_child<journal_agent>(std::string{k_journal_agent}, std::move(opts));
  c.system = true;
  c.shutdown = std::chrono::seconds(10);
  return c;
}

bool url_blocks(const std::string& url) { return url != "memory:"; }

std::string store_url(const config& cfg) {
  auto url = cfg.get_string("store.url");
  if (!url.empty()) return url;
  return "sqlite:"
         + (std::filesystem::path{cfg.get_string("node.data_dir")} / "agentflow.db").string();
}

journal_options journal_options_from(const config& cfg) {
  journal_options jo;
  auto url = store_url(cfg);
  if (url.starts_with("sqlite:")) {
    sqlite_options so;
    so.path = url.substr(7);
    so.synchronous = cfg.get_string("store.sqlite.synchronous");
    jo.open = [so]() { return open_sqlite(so); };
  } else if (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
    postgres_options po;
    po.url = url;
    po.statement_timeout_ms = static_cast<int>(cfg.get_int("store.postgres.statement_timeout_ms"));
    jo.open = [po]() { return open_postgres(po); };
  } else {
    jo.open = [url]() { return open_url(url); };
  }
  jo.blocking = url_blocks(url);
  jo.retention = std::chrono::milliseconds(cfg.get_int("store.retention.period_ms"));
  jo.compact_interval = std::chrono::milliseconds(cfg.get_int("store.retention.interval_ms"));
  return jo;
}

} // namespace af::store
