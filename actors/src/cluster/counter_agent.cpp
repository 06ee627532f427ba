// The event-sourced counter kind (af/cluster/counter.hpp): reloads its stream on activation,
// appends one event per add at the version it has seen, and on `conflict` (another activation
// wrote first) reloads and retries, so a stale activation's write never lands.
#include "af/cluster/counter.hpp"

#include "af/metrics.hpp"
#include "af/v1/placement.pb.h"
#include "af/v1/store.pb.h"

#include <deque>
#include <set>
#include <variant>

namespace af::cluster {

namespace {

class counter_agent : public agent_base<counter_agent> {
public:
  counter_agent(counter_options opts, std::string stream)
      : opts_(std::move(opts)), stream_(std::move(stream)) {}

  static void define(handlers<counter_agent>& h) {
    h.kind("af.cluster.counter").on(&counter_agent::on_add).on(&counter_agent::on_get);
  }

  void on_start(context& ctx) override {
    auto c = [&](const char* name, const char* help) {
      auto r = ctx.metrics().counter(name, help);
      return r ? *r : counter_handle{};
    };
    fenced_ = c("af_counter_fenced_total",
                "Counter appends refused by the journal (stale expected version): the state was "
                "reloaded instead");
    applied_total_ = c("af_counter_applied_total", "Counter adds appended to the journal");
    duplicates_ = c("af_counter_duplicates_total", "Counter adds whose op_id was applied before");
    load(ctx);
  }

  void on_add(context& ctx, const v1::CounterAdd& m, responder<v1::CounterValue> r) {
    queue_.push_back(op{m, std::move(r), 0});
    pump(ctx);
  }

  void on_get(context& ctx, const v1::CounterGet&, responder<v1::CounterValue> r) {
    queue_.push_back(op{std::monostate{}, std::move(r), 0});
    pump(ctx);
  }

private:
  struct op {
    std::variant<std::monostate, v1::CounterAdd> add; ///< monostate: a get
    responder<v1::CounterValue> reply;
    int retries = 0;
  };

  v1::CounterValue value(context& ctx, bool duplicate) const {
    v1::CounterValue v;
    v.set_value(value_);
    v.set_version(version_);
    v.set_duplicate(duplicate);
    v.set_node(ctx.self().node);
    return v;
  }

  /// Reads the stream from the version after the one applied, page by page.
  void load(context& ctx) {
    if (loading_) return;
    loading_ = true;
    v1::ReadRequest rq;
    rq.set_stream(stream_);
    rq.set_from_version(version_ + 1);
    rq.set_max(1000);
    ctx.ask<v1::ReadResult>(
        opts_.journal, std::move(rq), opts_.journal_timeout,
        [this, &ctx](expected<v1::ReadResult> r) {
          loading_ = false;
          if (!r) {
            ctx.log().warn("counter_load_failed", r.error().message(), {{"stream", stream_}});
            fail_all(error{errc::transient,
                           "counter '" + ctx.name()
                               + "': loading its state failed: " + r.error().message()});
            return;
          }
          for (const auto& ev : r->events())
            apply(ev);
          if (static_cast<std::size_t>(r->events_size()) >= 1000) {
            load(ctx); // more pages
            return;
          }
          loaded_ = true;
          pump(ctx);
        });
  }

  void apply(const v1::StoredEvent& ev) {
    if (ev.version() <= version_) return;
    v1::CounterEvent ce;
    if (ev.type() == v1::CounterEvent::descriptor()->full_name()
        && ce.ParseFromString(ev.payload())) {
      value_ += ce.amount();
      if (!ce.op_id().empty()) applied_.insert(ce.op_id());
    }
    version_ = ev.version();
  }

  void fail_all(const error& e) {
    while (!queue_.empty()) {
      queue_.front().reply.fail(e);
      queue_.pop_front();
    }
  }

  void pump(context& ctx) {
    if (!loaded_) {
      load(ctx);
      return;
    }
    while (!busy_ && !queue_.empty()) {
      auto& front = queue_.front();
      if (std::holds_alternative<std::monostate>(front.add)) {
        front.reply.reply(value(ctx, false));
        queue_.pop_front();
        continue;
      }
      const auto& add = std::get<v1::CounterAdd>(front.add);
      if (!add.op_id().empty() && applied_.contains(add.op_id())) {
        duplicates_.inc();
        front.reply.reply(value(ctx, true));
        queue_.pop_front();
        continue;
      }
      append(ctx, add);
    }
  }

  void append(context& ctx, const v1::CounterAdd& add) {
    busy_ = true;
    v1::CounterEvent ce;
    ce.set_op_id(add.op_id());
    ce.set_amount(add.amount());
    v1::AppendRequest rq;
    rq.set_stream(stream_);
    rq.set_expected_version(version_);
    auto* ne = rq.add_events();
    ne->set_type(v1::CounterEvent::descriptor()->full_name());
    ne->set_payload(ce.SerializeAsString());
    ctx.ask<v1::AppendResult>(
        opts_.journal, std::move(rq), opts_.journal_timeout,
        [this, &ctx, ce](expected<v1::AppendResult> r) {
          auto& front = queue_.front();
          if (r) {
            value_ += ce.amount();
            version_ = r->last_version();
            if (!ce.op_id().empty()) applied_.insert(ce.op_id());
            applied_total_.inc();
            front.reply.reply(value(ctx, false));
            queue_.pop_front();
            busy_ = false;
            pump(ctx);
            return;
          }
          if (r.error().code() == errc::conflict || r.error().code() == errc::timeout) {
            // Another activation wrote first (or this append's outcome is unknown): catch up
            // from the journal, then the op is checked against what landed and tried again.
            if (r.error().code() == errc::conflict) {
              fenced_.inc();
              ctx.log().warn("counter_fenced", r.error().message(),
                             {{"stream", stream_}, {"expected_version", version_}});
            }
            if (++front.retries > opts_.max_conflict_retries) {
              front.reply.fail(error{r.error().code(), "counter '" + ctx.name() + "': append to '"
                                                           + stream_ + "' gave up after "
                                                           + std::to_string(front.retries - 1)
                                                           + " retries: " + r.error().message()});
              queue_.pop_front();
            }
            busy_ = false;
            loaded_ = false;
            load(ctx);
            return;
          }
          front.reply.fail(std::move(r).error());
          queue_.pop_front();
          busy_ = false;
          pump(ctx);
        });
  }

  counter_options opts_;
  std::string stream_;
  std::int64_t value_ = 0;
  std::uint64_t version_ = 0;
  std::set<std::string> applied_; ///< op ids in the stream (deduplication)
  bool loaded_ = false, loading_ = false, busy_ = false;
  std::deque<op> queue_;
  counter_handle fenced_, applied_total_, duplicates_;
};

} // namespace

std::string counter_stream(const std::string& kind, const std::string& id) {
  return "agent/" + kind + "/" + id;
}

kind_factory counter_kind(counter_options opts) {
  return [opts](const std::string& kind, const std::string& id) -> std::unique_ptr<agent> {
    return std::make_unique<counter_agent>(opts, counter_stream(kind, id));
  };
}

} // namespace af::cluster
