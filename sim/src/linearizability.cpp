// The linearizability checker (af/sim/linearizability.hpp). Per key, Wing & Gong's search over
// the history's events in time order: take an operation whose call has happened and which the
// register allows now, "linearize" it, and start again from the first event; reaching the return
// of an operation not yet linearized means this order is wrong, so undo the last choice and try
// the next candidate. Lowe's memoization makes it practical: a configuration (set of operations
// linearized, register value) seen once is never explored again.
//
// Reductions keep histories with many timed-out operations cheap; all are exact:
// - values that no get read and no cas compared against are indistinguishable to every
//   operation, so they are one register value ("unobserved");
// - timed-out writes with the same effect (same kind, expected and value after the first
//   reduction) are interchangeable, so only the earliest called of them not yet linearized is
//   tried (otherwise k pending timed-out writes would cost 2^k configurations);
// - a timed-out write is placed only right before an operation that depends on it (reads its
//   value, expects it, or fails a cas because of it): in any valid order, a timed-out write
//   followed by an operation that does not depend on it can be swapped with that operation
//   (timed-out writes have no return, so they may always move later) or, when that operation
//   overwrites it, dropped;
// - a configuration is dominated by one seen before with the same value and the same operations
//   with a return but fewer without (visited_set), since those are never required.
// An operation without a return never has to be linearized (it may never have happened), and a
// timed-out get is dropped (it changes nothing and constrains nothing).
#include "af/sim/linearizability.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>

namespace af::sim {

namespace {

constexpr std::int32_t k_absent = 0;      // "" (a missing key)
constexpr std::int32_t k_unobserved = -1; // a value nobody read or compared against
constexpr std::uint64_t k_state_salt = 0x5bd1e9955bd1e995ULL;

std::string seconds(std::int64_t ns) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.6fs", static_cast<double>(ns) / 1e9);
  return buf;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string describe(const kv_op& op) {
  std::string out = "client " + std::to_string(op.client) + " ";
  switch (op.op) {
  case kv_op_kind::put:
    out += "put " + quoted(op.value);
    break;
  case kv_op_kind::get:
    out += "get -> " + quoted(op.value);
    break;
  case kv_op_kind::cas:
    out += "cas " + quoted(op.expected) + " -> " + quoted(op.value);
    if (op.ret) out += op.ok ? " ok" : " failed";
    break;
  }
  out += " [" + seconds(op.call) + ", " + (op.ret ? seconds(*op.ret) + "]" : "no return)");
  return out;
}

/// One operation as the search sees it.
struct model_op {
  kv_op_kind kind = kv_op_kind::get;
  bool known = true; ///< has a return
  bool ok = false;   ///< cas outcome (known only)
  std::int32_t value = 0, expected = 0;
  std::int32_t sym_prev = -1; ///< the previous interchangeable timed-out write, or -1
  std::size_t slot = 0;       ///< its bit among the operations with (or without) a return
  const kv_op* src = nullptr;
};

std::uint64_t mix64(std::uint64_t x) {
  // splitmix64's finalizer: a well spread 64-bit key per operation and per value.
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// The configurations seen: (operations linearized, register value), the operations split in
/// two bitsets, those with a return and those without. A configuration is also pruned when one
/// seen before had the same value and the same operations with a return, and a subset of those
/// without: operations without a return are never required, so whatever order completes from
/// the larger set completes from the smaller one too (leaving the extra ones out). Hashes cover
/// the value and the first bitset (Zobrist hashes kept up to date by the search); the bitsets
/// live in one arena, so a lookup allocates nothing.
class visited_set {
public:
  visited_set(std::size_t known_words, std::size_t unknown_words)
      : kw_(known_words), uw_(unknown_words) {
    slots_.assign(1024, 0);
  }

  /// Adds the configuration; false if it (or one that dominates it) was there already.
  bool insert(std::uint64_t hash, std::int32_t state, const std::vector<std::uint64_t>& known,
              const std::vector<std::uint64_t>& unknown) {
    if ((count_ + 1) * 2 > slots_.size()) grow();
    const auto i = find(hash, state, known, unknown);
    if (slots_[i] != 0) return false;
    slots_[i] = place(hash, state, known, unknown);
    return true;
  }

  /// Whether the configuration, or one that dominates it, is there.
  [[nodiscard]] bool dominated(std::uint64_t hash, std::int32_t state,
                               const std::vector<std::uint64_t>& known,
                               const std::vector<std::uint64_t>& unknown) const {
    return slots_[find(hash, state, known, unknown)] != 0;
  }

private:
  /// The slot of a dominating entry, or the empty slot ending the probe sequence.
  std::size_t find(std::uint64_t hash, std::int32_t state, const std::vector<std::uint64_t>& known,
                   const std::vector<std::uint64_t>& unknown) const {
    const auto mask = slots_.size() - 1;
    for (auto i = hash & mask;; i = (i + 1) & mask) {
      const auto s = slots_[i];
      if (s == 0) return i;
      const auto e = s - 1;
      if (hashes_[e] != hash || states_[e] != state) continue;
      const auto* k = &arena_[e * (kw_ + uw_)];
      if (!std::equal(known.begin(), known.end(), k)) continue;
      const auto* u = k + kw_;
      bool subset = true;
      for (std::size_t w = 0; w < uw_ && subset; ++w)
        subset = (u[w] & ~unknown[w]) == 0;
      if (subset) return i;
    }
  }

  std::uint32_t place(std::uint64_t hash, std::int32_t state,
                      const std::vector<std::uint64_t>& known,
                      const std::vector<std::uint64_t>& unknown) {
    hashes_.push_back(hash);
    states_.push_back(state);
    arena_.insert(arena_.end(), known.begin(), known.end());
    arena_.insert(arena_.end(), unknown.begin(), unknown.end());
    return static_cast<std::uint32_t>(++count_);
  }

  void grow() {
    std::vector<std::uint32_t> old(slots_.size() * 2, 0);
    old.swap(slots_);
    const auto mask = slots_.size() - 1;
    for (auto s : old)
      if (s != 0) {
        auto i = hashes_[s - 1] & mask;
        while (slots_[i] != 0)
          i = (i + 1) & mask;
        slots_[i] = s;
      }
  }

  std::size_t kw_, uw_;
  std::size_t count_ = 0;
  std::vector<std::uint32_t> slots_; ///< entry index + 1, or 0 for empty
  std::vector<std::uint64_t> hashes_;
  std::vector<std::int32_t> states_;
  std::vector<std::uint64_t> arena_; ///< per entry: known bits, then unknown bits
};

class key_search {
public:
  key_search(std::string key, const std::vector<const kv_op*>& ops,
             const linearizability_options& opts)
      : opts_(opts) {
    verdict_.key = std::move(key);
    verdict_.ops = ops.size();
    for (const auto* o : ops)
      if (!o->ret) ++verdict_.unknown;
    build(ops);
  }

  key_verdict run() {
    if (!precheck()) return verdict_;
    search();
    return verdict_;
  }

private:
  void build(const std::vector<const kv_op*>& all) {
    // Timed-out gets change nothing and need not be placed.
    std::vector<const kv_op*> ops;
    for (const auto* o : all)
      if (o->ret || o->op != kv_op_kind::get) ops.push_back(o);
    // Observed values: "", what gets read, what cas compared against.
    std::map<std::string, std::int32_t> observed{{"", k_absent}};
    auto observe = [&](const std::string& v) {
      observed.emplace(v, static_cast<std::int32_t>(observed.size()));
    };
    for (const auto* o : ops) {
      if (o->op == kv_op_kind::get) observe(o->value);
      if (o->op == kv_op_kind::cas) observe(o->expected);
    }
    auto id = [&](const std::string& v) {
      auto it = observed.find(v);
      return it == observed.end() ? k_unobserved : it->second;
    };
    // Events in time order; at equal times calls come first (touching intervals overlap).
    struct event {
      std::int64_t t;
      int is_return;
      std::size_t op;
    };
    std::vector<event> events;
    ops_.resize(ops.size());
    std::map<std::tuple<int, std::int32_t, std::int32_t>, std::int32_t> last_of_kind;
    std::vector<std::size_t> by_call(ops.size());
    for (std::size_t i = 0; i < ops.size(); ++i)
      by_call[i] = i;
    std::stable_sort(by_call.begin(), by_call.end(),
                     [&](std::size_t a, std::size_t b) { return ops[a]->call < ops[b]->call; });
    for (auto i : by_call) {
      const auto& o = *ops[i];
      auto& m = ops_[i];
      m.kind = o.op;
      m.known = o.ret.has_value();
      m.ok = o.ok;
      m.value = id(o.value);
      m.expected = o.op == kv_op_kind::cas ? id(o.expected) : 0;
      m.src = &o;
      if (!m.known) {
        auto sig = std::make_tuple(static_cast<int>(m.kind), m.expected, m.value);
        if (auto it = last_of_kind.find(sig); it != last_of_kind.end()) m.sym_prev = it->second;
        last_of_kind[sig] = static_cast<std::int32_t>(i);
      } else {
        ++n_known_;
      }
      events.push_back({o.call, 0, i});
      if (o.ret) events.push_back({*o.ret, 1, i});
    }
    std::stable_sort(events.begin(), events.end(), [](const event& a, const event& b) {
      if (a.t != b.t) return a.t < b.t;
      if (a.is_return != b.is_return) return a.is_return < b.is_return;
      return a.op < b.op;
    });
    // A doubly linked list of entries 1..E with sentinel 0 (dancing links: lifted entries keep
    // their links, so undoing in reverse order restores the list).
    const auto e_count = events.size();
    next_.assign(e_count + 1, 0);
    prev_.assign(e_count + 1, 0);
    entry_op_.assign(e_count + 1, 0);
    is_call_.assign(e_count + 1, false);
    match_.assign(e_count + 1, 0);
    std::vector<std::size_t> call_entry(ops.size(), 0);
    for (std::size_t k = 0; k < e_count; ++k) {
      const auto e = k + 1;
      entry_op_[e] = events[k].op;
      is_call_[e] = events[k].is_return == 0;
      if (is_call_[e])
        call_entry[events[k].op] = e;
      else
        match_[call_entry[events[k].op]] = e;
      prev_[e] = k;
      next_[k] = e;
    }
    next_[e_count] = 0;
    prev_[0] = e_count;
    std::size_t n_unknown = 0;
    for (auto& m : ops_)
      m.slot = m.known ? known_slots_++ : n_unknown++;
    known_bits_.assign((known_slots_ + 63) / 64, 0);
    unknown_bits_.assign((n_unknown + 63) / 64, 0);
  }

  /// Direct evidence, cheaper and clearer than a failed search: a value read (or compared
  /// successfully) that nothing ever wrote to the key.
  bool precheck() {
    std::set<std::string> written{""};
    for (const auto& m : ops_)
      if (m.kind == kv_op_kind::put || (m.kind == kv_op_kind::cas && (!m.known || m.ok)))
        written.insert(m.src->value);
    for (const auto& m : ops_) {
      if (!m.known) continue;
      const std::string* v = nullptr;
      if (m.kind == kv_op_kind::get) v = &m.src->value;
      if (m.kind == kv_op_kind::cas && m.ok) v = &m.src->expected;
      if (v != nullptr && !written.contains(*v)) {
        verdict_.ok = false;
        verdict_.at = *m.src->ret;
        verdict_.explanation = describe(*m.src) + (m.kind == kv_op_kind::get ? " read " : " found ")
                               + quoted(*v) + ", which no put or successful cas wrote to this key";
        return false;
      }
    }
    return true;
  }

  void lift(std::size_t e) {
    auto unlink = [this](std::size_t x) {
      next_[prev_[x]] = next_[x];
      prev_[next_[x]] = prev_[x];
    };
    unlink(e);
    if (match_[e] != 0) unlink(match_[e]);
  }

  void unlift(std::size_t e) {
    auto relink = [this](std::size_t x) {
      next_[prev_[x]] = x;
      prev_[next_[x]] = x;
    };
    if (match_[e] != 0) relink(match_[e]);
    relink(e);
  }

  bool linearized(std::size_t op) const {
    const auto& m = ops_[op];
    const auto& bits = m.known ? known_bits_ : unknown_bits_;
    return (bits[m.slot / 64] >> (m.slot % 64)) & 1U;
  }
  void flip(std::size_t op) {
    const auto& m = ops_[op];
    auto& bits = m.known ? known_bits_ : unknown_bits_;
    bits[m.slot / 64] ^= std::uint64_t{1} << (m.slot % 64);
    if (m.known) zobrist_ ^= mix64(m.slot);
  }

  /// The register's step: whether `m` may take effect on `s`, and the value after it.
  static bool step(const model_op& m, std::int32_t s, std::int32_t& out) {
    out = s;
    switch (m.kind) {
    case kv_op_kind::put:
      out = m.value;
      return true;
    case kv_op_kind::get:
      return s == m.value; // read values are observed, never k_unobserved
    case kv_op_kind::cas:
      if (!m.known || m.ok) {
        // A timed-out cas is only worth placing where it succeeds: placed where it fails it
        // does nothing, exactly like never placing it.
        if (s != m.expected) return false;
        out = m.value;
        return true;
      }
      return s != m.expected;
    }
    return false;
  }

  /// Whether `x`, placed right after the timed-out write `w` (placed on `before`), depends on
  /// it: it reads w's value, or is a cas expecting it, or is a failed cas that would have
  /// succeeded on `before`. Only such an `x` may follow `w` (see the file comment).
  static bool needs(const model_op& w, std::int32_t before, const model_op& x) {
    switch (x.kind) {
    case kv_op_kind::put:
      return false;
    case kv_op_kind::get:
      return x.value == w.value;
    case kv_op_kind::cas:
      return (!x.known || x.ok) ? x.expected == w.value : x.expected == before;
    }
    return false;
  }

  struct frame {
    std::size_t entry;
    std::int32_t state;
  };

  void search() {
    visited_set seen{known_bits_.size(), unknown_bits_.size()};
    std::vector<frame> stack;
    std::int32_t state = k_absent;
    std::size_t placed_known = 0;
    std::size_t e = next_[0];
    bool have_best = false;
    for (;;) {
      if (placed_known == n_known_) { // linearizable: forget the dead ends met on the way
        verdict_.explanation.clear();
        verdict_.at = -1;
        return;
      }
      if (e != 0 && is_call_[e]) {
        const auto op = entry_op_[e];
        const auto& m = ops_[op];
        std::int32_t after = 0;
        // Twins: only the earliest called of interchangeable timed-out writes.
        bool allowed = m.sym_prev < 0 || linearized(static_cast<std::size_t>(m.sym_prev));
        // Right after a timed-out write, only an operation that depends on it.
        if (allowed && !stack.empty()) {
          const auto& top = ops_[entry_op_[stack.back().entry]];
          if (!top.known) allowed = needs(top, stack.back().state, m);
        }
        if (allowed && step(m, state, after)) {
          flip(op);
          const auto hash = zobrist_ ^ mix64(static_cast<std::uint64_t>(after) ^ k_state_salt);
          // A configuration right after a timed-out write carries an obligation (what may come
          // next), which the memo does not record: it is looked up but never stored.
          const bool fresh = m.known ? seen.insert(hash, after, known_bits_, unknown_bits_)
                                     : !seen.dominated(hash, after, known_bits_, unknown_bits_);
          if (fresh) {
            if (++verdict_.states > opts_.max_states_per_key) {
              verdict_.ok = false;
              verdict_.decided = false;
              verdict_.at = -1;
              verdict_.explanation = "undecided: the search visited more than "
                                     + std::to_string(opts_.max_states_per_key) + " states";
              return;
            }
            stack.push_back({e, state});
            state = after;
            lift(e);
            if (m.known) ++placed_known;
            e = next_[0];
            continue;
          }
          flip(op);
        }
        e = next_[e];
        continue;
      }
      // The return of an operation not yet placed (or the end): this order fails here.
      if (e != 0 && (!have_best || stack.size() > best_depth_)) {
        have_best = true;
        best_depth_ = stack.size();
        note_failure(stack, entry_op_[e]);
      }
      if (stack.empty()) {
        verdict_.ok = false;
        if (verdict_.explanation.empty())
          verdict_.explanation = "no valid order of its operations exists";
        return;
      }
      const auto f = stack.back();
      stack.pop_back();
      const auto op = entry_op_[f.entry];
      flip(op);
      if (ops_[op].known) --placed_known;
      state = f.state;
      unlift(f.entry);
      e = next_[f.entry];
    }
  }

  /// The deepest dead end so far: the valid prefix, the value it leaves, and the operation
  /// that returned without a place.
  void note_failure(const std::vector<frame>& stack, std::size_t blocked) {
    const kv_op* last_write = nullptr;
    for (auto it = stack.rbegin(); it != stack.rend() && last_write == nullptr; ++it) {
      const auto& m = ops_[entry_op_[it->entry]];
      if (m.kind == kv_op_kind::put || (m.kind == kv_op_kind::cas && (!m.known || m.ok)))
        last_write = m.src;
    }
    const kv_op* last = stack.empty() ? nullptr : ops_[entry_op_[stack.back().entry]].src;
    std::string out = "no valid order of its " + std::to_string(verdict_.ops) + " operations";
    out += "; the longest valid prefix places " + std::to_string(stack.size());
    if (last != nullptr && last != last_write) out += ", the last " + describe(*last);
    out += ", leaving the key ";
    out += last_write == nullptr
               ? std::string{"absent (\"\")"}
               : quoted(last_write->value) + " (written by " + describe(*last_write) + ")";
    const auto& b = *ops_[blocked].src;
    out += "; then " + describe(b) + " cannot take effect before it returns";
    verdict_.explanation = std::move(out);
    verdict_.at = b.ret.value_or(b.call);
  }

  const linearizability_options& opts_;
  key_verdict verdict_;
  std::vector<model_op> ops_;
  std::size_t n_known_ = 0;
  std::vector<std::size_t> next_, prev_, entry_op_, match_;
  std::vector<bool> is_call_;
  std::size_t known_slots_ = 0;
  std::vector<std::uint64_t> known_bits_, unknown_bits_; ///< linearized, by model_op::slot
  std::uint64_t zobrist_ = 0; ///< xor of mix64(slot) over the linearized known operations
  std::size_t best_depth_ = 0;
};

} // namespace

const key_verdict* linearizability_result::first_failure() const {
  for (const auto& k : keys)
    if (!k.ok) return &k;
  return nullptr;
}

std::string linearizability_result::summary() const {
  if (const auto* f = first_failure())
    return "key " + quoted(f->key) + (f->decided ? ": " : " ") + f->explanation;
  return "linearizable: " + std::to_string(keys.size()) + " keys, " + std::to_string(ops) + " ops ("
         + std::to_string(unknown) + " without return), " + std::to_string(states)
         + " search states";
}

linearizability_result check_linearizable(const std::vector<kv_op>& history,
                                          const linearizability_options& opts) {
  std::map<std::string, std::vector<const kv_op*>> by_key;
  for (const auto& op : history)
    by_key[op.key].push_back(&op);
  linearizability_result out;
  for (const auto& [key, ops] : by_key) {
    auto v = key_search{key, ops, opts}.run();
    out.ops += v.ops;
    out.unknown += v.unknown;
    out.states += v.states;
    out.ok = out.ok && v.ok;
    out.keys.push_back(std::move(v));
  }
  return out;
}

} // namespace af::sim
