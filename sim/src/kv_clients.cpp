// The kv client workload (kv_clients.hpp): sim.kv_client agents that drive the Raft metadata
// store, the history they leave, and its linearizability check.
#include "kv_clients.hpp"

#include "af/agent.hpp"
#include "af/cluster/names.hpp"
#include "af/sim/linearizability.hpp"
#include "af/v1/meta.pb.h"

#include <google/protobuf/wrappers.pb.h>

#include <fstream>

namespace af::sim::detail {

namespace {

constexpr std::uint64_t k_next_op = 0, k_retry = 1;

/// One sequential client: an operation, then its attempts (each on another member, the same
/// session seq for a write), then the next operation after `think`. What it does and sees goes
/// to the book at once, so a crash of its node loses nothing: the operation in progress then
/// stays without a return, and the restarted client goes on with the next one.
class kv_client final : public agent_base<kv_client> {
public:
  kv_client(kv_book* book, std::uint32_t index) : book_(book), index_(index) {}

  static void define(handlers<kv_client>& h) { h.kind("sim.kv_client").on(&kv_client::on_timer); }

  void on_start(context& ctx) override {
    auto& c = me();
    if (c.open) close_unknown();
    later(ctx, book_->spec.think, k_next_op);
  }

  void on_timer(context& ctx, const google::protobuf::UInt64Value& what) {
    if (what.value() == k_retry)
      attempt(ctx);
    else
      start_op(ctx);
  }

private:
  kv_book::client& me() { return book_->clients[index_]; }
  kv_op& op() { return book_->history[*me().open]; }
  [[nodiscard]] std::int64_t now() const { return book_->elapsed().count(); }

  void later(context& ctx, duration d, std::uint64_t what) {
    google::protobuf::UInt64Value v;
    v.set_value(what);
    ctx.schedule(d, v);
  }

  void start_op(context& ctx) {
    auto& c = me();
    const auto& s = book_->spec;
    if (c.open || c.issued >= s.ops_per_client || book_->elapsed() >= book_->stop_at) return;
    kv_op o;
    o.client = index_;
    const auto pick = ctx.rng().uniform01() * (s.put + s.get + s.cas);
    o.op = pick < s.put           ? kv_op_kind::put
           : pick < s.put + s.get ? kv_op_kind::get
                                  : kv_op_kind::cas;
    // append, not "k" + ...: GCC 12 warns falsely (-Wrestrict, its bug 105329) on the latter.
    o.key = std::string{"k"}.append(std::to_string(ctx.rng().uniform(s.keys)));
    if (o.op != kv_op_kind::get) {
      // Unique values make the check strong: a read names the one write it saw.
      o.value = "c" + std::to_string(index_) + "-" + std::to_string(c.issued);
      c.seq = c.next_seq++;
    }
    if (o.op == kv_op_kind::cas) o.expected = c.last_seen[o.key];
    o.call = now();
    auto& k = book_->counts;
    ++k.ops;
    ++(o.op == kv_op_kind::put ? k.puts : o.op == kv_op_kind::get ? k.gets : k.cas);
    book_->history.push_back(std::move(o));
    c.open = book_->history.size() - 1;
    c.issued += 1;
    c.tries = 0;
    if (c.target.empty()) c.target = book_->members[ctx.rng().uniform(book_->members.size())];
    attempt(ctx);
  }

  /// Another member than the one that failed us (the only one if there is one).
  void move_on(context& ctx) {
    auto& c = me();
    const auto& m = book_->members;
    if (m.size() < 2) return;
    auto next = m[ctx.rng().uniform(m.size() - 1)];
    if (next == c.target) next = m.back();
    c.target = next;
  }

  void attempt(context& ctx) {
    auto& c = me();
    if (!c.open) return;
    ++c.tries;
    ++book_->counts.attempts;
    auto ref = ctx.lookup(address{c.target, std::string{cluster::k_raft_agent}});
    if (!ref) return failed(ctx);
    const auto& o = op();
    const auto timeout = book_->spec.timeout;
    v1::MetaSession session;
    session.set_client_id("kv-client-" + std::to_string(index_));
    session.set_seq(c.seq);
    auto on_write = [this, &ctx](expected<v1::MetaResult> r) {
      if (!r) return failed(ctx);
      auto& o = op();
      if (o.op == kv_op_kind::cas) {
        o.ok = r->ok();
        if (o.ok) ++book_->counts.cas_ok;
        // A failed cas learns the current value (MetaResult.entry).
        me().last_seen[o.key] = o.ok ? o.value : (r->entry().found() ? r->entry().value() : "");
      } else {
        me().last_seen[o.key] = o.value;
      }
      returned(ctx);
    };
    switch (o.op) {
    case kv_op_kind::put: {
      v1::MetaPut m;
      m.set_key(o.key);
      m.set_value(o.value);
      *m.mutable_session() = session;
      ctx.ask<v1::MetaResult>(*ref, std::move(m), timeout, on_write);
      return;
    }
    case kv_op_kind::cas: {
      v1::MetaCas m;
      m.set_key(o.key);
      m.set_expected(o.expected);
      m.set_expect_absent(o.expected.empty()); // the workload never writes ""
      m.set_value(o.value);
      *m.mutable_session() = session;
      ctx.ask<v1::MetaResult>(*ref, std::move(m), timeout, on_write);
      return;
    }
    case kv_op_kind::get: {
      v1::MetaGet m;
      m.set_key(o.key);
      m.set_stale_ok(book_->spec.stale_reads);
      ctx.ask<v1::MetaEntry>(*ref, std::move(m), timeout, [this, &ctx](expected<v1::MetaEntry> r) {
        if (!r) return failed(ctx);
        auto& o = op();
        o.value = r->found() ? r->value() : "";
        me().last_seen[o.key] = o.value;
        returned(ctx);
      });
      return;
    }
    }
  }

  void returned(context& ctx) {
    auto& c = me();
    op().ret = now();
    ++book_->counts.returned;
    if (c.tries > 1) ++book_->counts.retried;
    c.open.reset();
    later(ctx, book_->spec.think, k_next_op);
  }

  /// An error or a timeout: the operation may or may not have taken effect. Another member gets
  /// the same request (a write keeps its session seq, so it applies at most once); after the
  /// last attempt the operation stays without a return.
  void failed(context& ctx) {
    auto& c = me();
    move_on(ctx);
    if (c.tries < book_->spec.attempts) {
      later(ctx, book_->spec.backoff, k_retry);
      return;
    }
    if (c.tries > 1) ++book_->counts.retried;
    close_unknown();
    later(ctx, book_->spec.think, k_next_op);
  }

  void close_unknown() {
    ++book_->counts.unknown;
    me().open.reset();
  }

  kv_book* book_;
  std::uint32_t index_;
};

} // namespace

std::vector<std::pair<std::string, sup::child_spec>>
kv_client_children(kv_book& book, const std::vector<std::string>& all_nodes) {
  const auto& on = book.spec.nodes.empty() ? all_nodes : book.spec.nodes;
  book.clients.assign(book.spec.clients, {});
  book.counts.clients = book.spec.clients;
  book.counts.keys = book.spec.keys;
  std::vector<std::pair<std::string, sup::child_spec>> out;
  for (std::uint32_t i = 0; i < book.spec.clients; ++i) {
    sup::child_spec c;
    c.id = "kv-client-" + std::to_string(i);
    c.restart = sup::restart_policy::permanent;
    c.make_agent = [b = &book, i]() -> std::unique_ptr<agent> {
      return std::make_unique<kv_client>(b, i);
    };
    out.emplace_back(on[i % on.size()], std::move(c));
  }
  return out;
}

invariant_result finish_kv(kv_book& book, duration now) {
  for (auto& c : book.clients)
    if (c.open) {
      ++book.counts.unknown;
      c.open.reset();
    }
  invariant_result r{"linearizable", true, {}, now};
  const auto check = check_linearizable(book.history);
  book.counts.check_states = check.states;
  r.ok = check.ok;
  r.detail = check.summary();
  if (const auto* f = check.first_failure(); f != nullptr && f->at >= 0) r.at = duration{f->at};
  return r;
}

status write_kv_history(const kv_book& book, const std::string& file) {
  std::ofstream out{file, std::ios::trunc};
  if (!out) return validation_error("--history: cannot write '" + file + "'");
  for (const auto& o : book.history)
    out << to_json_line(o) << '\n';
  out.flush();
  if (!out) return validation_error("--history: error writing '" + file + "'");
  return {};
}

} // namespace af::sim::detail
