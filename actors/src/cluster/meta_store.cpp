// The metadata store's state machine (see meta_store.hpp for lease and session semantics).
#include "cluster/meta_store.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace af::cluster {

namespace {

v1::MetaCommandResult error_result(errc code, std::string msg) {
  v1::MetaCommandResult r;
  r.mutable_error()->set_kind(std::string{to_string(code)});
  r.mutable_error()->set_message(std::move(msg));
  return r;
}

const v1::MetaSession* session_of(const v1::MetaCommand& c) {
  switch (c.op_case()) {
  case v1::MetaCommand::kPut:
    return c.put().has_session() ? &c.put().session() : nullptr;
  case v1::MetaCommand::kCas:
    return c.cas().has_session() ? &c.cas().session() : nullptr;
  case v1::MetaCommand::kDel:
    return c.del().has_session() ? &c.del().session() : nullptr;
  case v1::MetaCommand::kAcquire:
    return c.acquire().has_session() ? &c.acquire().session() : nullptr;
  case v1::MetaCommand::kRelease:
    return c.release().has_session() ? &c.release().session() : nullptr;
  default:
    return nullptr;
  }
}

constexpr std::int64_t k_ms = 1'000'000;

} // namespace

namespace {

template <class Op>
constexpr int k_op_field = 0;
// The field numbers of MetaCommand's oneof op (raft.proto).
template <>
constexpr int k_op_field<v1::MetaPut> = v1::MetaCommand::kPutFieldNumber;
template <>
constexpr int k_op_field<v1::MetaCas> = v1::MetaCommand::kCasFieldNumber;
template <>
constexpr int k_op_field<v1::MetaDelete> = v1::MetaCommand::kDelFieldNumber;
template <>
constexpr int k_op_field<v1::LeaseAcquire> = v1::MetaCommand::kAcquireFieldNumber;
template <>
constexpr int k_op_field<v1::LeaseRelease> = v1::MetaCommand::kReleaseFieldNumber;

} // namespace

template <class Op>
std::string encode_command(const command_stamp& s, const Op& op) {
  using wfl = google::protobuf::internal::WireFormatLite;
  static_assert(k_op_field<Op> != 0, "not an op of MetaCommand");
  const auto op_size = op.ByteSizeLong();
  std::string out;
  out.reserve(op_size + 40);
  {
    google::protobuf::io::StringOutputStream sos{&out};
    google::protobuf::io::CodedOutputStream c{&sos};
    // proto3: a field at its default value is not written.
    if (s.leader_time_ns != 0) {
      c.WriteTag(wfl::MakeTag(v1::MetaCommand::kLeaderTimeNsFieldNumber, wfl::WIRETYPE_VARINT));
      c.WriteVarint64(static_cast<std::uint64_t>(s.leader_time_ns));
    }
    if (s.leader_since_ns != 0) {
      c.WriteTag(wfl::MakeTag(v1::MetaCommand::kLeaderSinceNsFieldNumber, wfl::WIRETYPE_VARINT));
      c.WriteVarint64(static_cast<std::uint64_t>(s.leader_since_ns));
    }
    if (s.term != 0) {
      c.WriteTag(wfl::MakeTag(v1::MetaCommand::kTermFieldNumber, wfl::WIRETYPE_VARINT));
      c.WriteVarint64(s.term);
    }
    // A oneof member is written even when empty.
    c.WriteTag(wfl::MakeTag(k_op_field<Op>, wfl::WIRETYPE_LENGTH_DELIMITED));
    c.WriteVarint32(static_cast<std::uint32_t>(op_size));
    op.SerializeWithCachedSizes(&c);
  }
  return out;
}

template std::string encode_command(const command_stamp&, const v1::MetaPut&);
template std::string encode_command(const command_stamp&, const v1::MetaCas&);
template std::string encode_command(const command_stamp&, const v1::MetaDelete&);
template std::string encode_command(const command_stamp&, const v1::LeaseAcquire&);
template std::string encode_command(const command_stamp&, const v1::LeaseRelease&);

meta_store::result_ptr meta_store::apply_shared(const std::string& command,
                                                std::uint64_t index) {
  v1::MetaCommand cmd;
  if (!cmd.ParseFromString(command)) {
    applied_ = std::max(applied_, index);
    return std::make_shared<const v1::MetaCommandResult>(error_result(
        errc::validation, "meta command at index " + std::to_string(index) + " does not parse"));
  }
  return apply_shared(cmd, index);
}

meta_store::result_ptr meta_store::apply_shared(const v1::MetaCommand& cmd, std::uint64_t index) {
  applied_ = std::max(applied_, index);
  last_time_ns_ = std::max(last_time_ns_, cmd.leader_time_ns());
  // Sweep idle sessions now and then (every replica at the same indices: deterministic).
  if (index % 1024 == 0) expire_sessions();
  const auto* s = session_of(cmd);
  if (s == nullptr || s->client_id().empty())
    return std::make_shared<const v1::MetaCommandResult>(execute(cmd, index));
  auto& sess = sessions_[s->client_id()];
  sess.last_active_ns = last_time_ns_;
  if (const auto* done = sess.find(s->seq())) return *done;
  if (!sess.results.empty() && s->seq() < sess.results.front().first)
    return std::make_shared<const v1::MetaCommandResult>(error_result(
        errc::conflict, "session '" + s->client_id() + "': seq " + std::to_string(s->seq())
                            + " is older than the retries remembered (from "
                            + std::to_string(sess.results.front().first) + ")"));
  // Moved, not copied, into the shared outcome (same arena, none: a swap).
  auto r = std::make_shared<const v1::MetaCommandResult>(execute(cmd, index));
  sess.insert(s->seq(), r);
  while (sess.results.size() > opts_.session_window)
    sess.results.pop_front();
  if (sessions_.size() > opts_.max_sessions) {
    // The least recently active session goes (ties: by client id), never the one just used.
    auto victim = sessions_.end();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
      if (it->first != s->client_id()
          && (victim == sessions_.end()
              || it->second.last_active_ns < victim->second.last_active_ns))
        victim = it;
    if (victim != sessions_.end()) sessions_.erase(victim);
  }
  return r;
}

const meta_store::result_ptr* meta_store::session::find(std::uint64_t seq) const {
  // The common case: the client's next seq, newer than every outcome kept.
  if (results.empty() || results.back().first < seq) return nullptr;
  auto it = std::lower_bound(results.begin(), results.end(), seq,
                             [](const auto& e, std::uint64_t s) { return e.first < s; });
  return it != results.end() && it->first == seq ? &it->second : nullptr;
}

void meta_store::session::insert(std::uint64_t seq, result_ptr r) {
  if (results.empty() || results.back().first < seq) {
    results.emplace_back(seq, std::move(r));
    return;
  }
  auto it = std::lower_bound(results.begin(), results.end(), seq,
                             [](const auto& e, std::uint64_t s) { return e.first < s; });
  if (it != results.end() && it->first == seq)
    it->second = std::move(r); // a duplicate seq in a snapshot: the last one wins, as in a map
  else
    results.emplace(it, seq, std::move(r));
}

void meta_store::expire_sessions() {
  const auto idle = opts_.session_idle.count();
  std::erase_if(sessions_,
                [&](const auto& kv) { return last_time_ns_ - kv.second.last_active_ns > idle; });
}

v1::MetaCommandResult meta_store::execute(const v1::MetaCommand& cmd, std::uint64_t index) {
  auto check_key = [&](const std::string& key, const char* what) -> std::optional<std::string> {
    if (key.empty()) return std::string{what} + ": the key is empty";
    if (key.size() > opts_.max_key_bytes)
      return std::string{what} + ": key longer than " + std::to_string(opts_.max_key_bytes)
             + " bytes";
    return std::nullopt;
  };
  auto check_value = [&](const std::string& v, const char* what) -> std::optional<std::string> {
    if (v.size() > opts_.max_value_bytes)
      return std::string{what} + ": value longer than " + std::to_string(opts_.max_value_bytes)
             + " bytes";
    return std::nullopt;
  };
  v1::MetaCommandResult out;
  switch (cmd.op_case()) {
  case v1::MetaCommand::kPut: {
    const auto& p = cmd.put();
    if (auto e = check_key(p.key(), "MetaPut")) return error_result(errc::validation, *e);
    if (auto e = check_value(p.value(), "MetaPut")) return error_result(errc::validation, *e);
    auto& slot = kv_[p.key()];
    slot.value = p.value();
    slot.version = index;
    auto* m = out.mutable_meta();
    m->set_ok(true);
    m->set_index(index);
    // What get(key) would give, without looking the key up again.
    auto* e = m->mutable_entry();
    e->set_key(p.key());
    e->set_value(p.value());
    e->set_found(true);
    e->set_version(index);
    return out;
  }
  case v1::MetaCommand::kCas: {
    const auto& c = cmd.cas();
    if (auto e = check_key(c.key(), "MetaCas")) return error_result(errc::validation, *e);
    if (auto e = check_value(c.value(), "MetaCas")) return error_result(errc::validation, *e);
    auto it = kv_.find(c.key());
    const bool match =
        c.expect_absent() ? it == kv_.end() : it != kv_.end() && it->second.value == c.expected();
    auto* m = out.mutable_meta();
    m->set_index(index);
    if (match) kv_[c.key()] = {c.value(), index};
    m->set_ok(match);
    *m->mutable_entry() = get(c.key());
    return out;
  }
  case v1::MetaCommand::kDel: {
    const auto& d = cmd.del();
    if (auto e = check_key(d.key(), "MetaDelete")) return error_result(errc::validation, *e);
    auto* m = out.mutable_meta();
    *m->mutable_entry() = get(d.key()); // what was deleted (found false: nothing)
    kv_.erase(d.key());
    m->set_ok(true);
    m->set_index(index);
    return out;
  }
  case v1::MetaCommand::kAcquire: {
    const auto& a = cmd.acquire();
    if (auto e = check_key(a.key(), "LeaseAcquire")) return error_result(errc::validation, *e);
    if (a.owner().empty()) return error_result(errc::validation, "LeaseAcquire: owner is empty");
    if (a.ttl_ms() == 0) return error_result(errc::validation, "LeaseAcquire: ttl_ms must be > 0");
    const auto now = last_time_ns_;
    auto& l = leases_[a.key()];
    const bool same = !l.owner.empty() && l.owner == a.owner();
    bool free = l.owner.empty() || now >= l.expires_ns;
    // A lease granted under an earlier leader: its holder may still count on it until this
    // leader has been in office for the lease's ttl (see meta_store.hpp).
    if (free && !l.owner.empty() && l.granted_term < cmd.term()
        && cmd.leader_time_ns() - cmd.leader_since_ns() < std::int64_t{l.ttl_ms} * k_ms)
      free = false;
    if (same || free) {
      if (!same) ++l.epoch;
      l.owner = a.owner();
      l.expires_ns = now + std::int64_t{a.ttl_ms()} * k_ms;
      l.ttl_ms = a.ttl_ms();
      l.granted_term = cmd.term();
      l.version = index;
      *out.mutable_lease() = lease_result(a.key(), l, now, index);
      out.mutable_lease()->set_granted(true);
    } else {
      *out.mutable_lease() = lease_result(a.key(), l, now, index);
      out.mutable_lease()->set_granted(false);
    }
    return out;
  }
  case v1::MetaCommand::kRelease: {
    const auto& r = cmd.release();
    if (auto e = check_key(r.key(), "LeaseRelease")) return error_result(errc::validation, *e);
    auto it = leases_.find(r.key());
    bool released = false;
    if (it != leases_.end() && !it->second.owner.empty() && it->second.owner == r.owner()) {
      it->second.owner.clear();
      it->second.expires_ns = 0;
      it->second.version = index;
      released = true;
    }
    lease_rec none;
    *out.mutable_lease() =
        lease_result(r.key(), it == leases_.end() ? none : it->second, last_time_ns_, index);
    out.mutable_lease()->set_granted(released);
    return out;
  }
  default:
    return error_result(errc::validation,
                        "meta command at index " + std::to_string(index) + " has no operation");
  }
}

v1::LeaseResult meta_store::lease_result(const std::string&, const lease_rec& l,
                                         std::int64_t now_ns, std::uint64_t index) const {
  v1::LeaseResult r;
  const bool held = !l.owner.empty() && now_ns < l.expires_ns;
  r.set_granted(held);
  if (held) {
    r.set_owner(l.owner);
    r.set_ttl_left_ms((l.expires_ns - now_ns) / k_ms);
  }
  r.set_epoch(l.epoch);
  r.set_index(index);
  return r;
}

v1::MetaEntry meta_store::get(const std::string& key) const {
  v1::MetaEntry e;
  e.set_key(key);
  if (auto it = kv_.find(key); it != kv_.end()) {
    e.set_value(it->second.value);
    e.set_found(true);
    e.set_version(it->second.version);
  }
  return e;
}

v1::MetaEntries meta_store::list(const std::string& prefix, std::uint32_t limit) const {
  v1::MetaEntries out;
  const std::uint32_t max = limit == 0 ? 1000 : limit;
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.starts_with(prefix)
                                          && static_cast<std::uint32_t>(out.entries_size()) < max;
       ++it) {
    auto* e = out.add_entries();
    e->set_key(it->first);
    e->set_value(it->second.value);
    e->set_found(true);
    e->set_version(it->second.version);
  }
  return out;
}

v1::LeaseResult meta_store::lease(const std::string& key, time_point now) const {
  const auto t = std::max(last_time_ns_, now.time_since_epoch().count());
  auto it = leases_.find(key);
  if (it == leases_.end()) {
    v1::LeaseResult r;
    r.set_index(applied_);
    return r;
  }
  auto r = lease_result(key, it->second, t, applied_);
  r.set_index(it->second.version);
  return r;
}

std::size_t meta_store::leases_held(time_point now) const {
  const auto t = std::max(last_time_ns_, now.time_since_epoch().count());
  return static_cast<std::size_t>(
      std::count_if(leases_.begin(), leases_.end(), [&](const auto& kv) {
        return !kv.second.owner.empty() && t < kv.second.expires_ns;
      }));
}

// MetaStoreSnapshot written field by field, byte for byte what building the message and
// SerializeToString gives (fields in number order, proto3 defaults left out, seqs packed), without
// building it: the message would hold a deep copy of every session's outcomes (64 clients x 64
// outcomes), copied in and destroyed again at each snapshot.
std::string meta_store::snapshot() const {
  using wfl = google::protobuf::internal::WireFormatLite;
  using cos = google::protobuf::io::CodedOutputStream;
  const auto tag_len = [](int field) { return wfl::MakeTag(field, wfl::WIRETYPE_LENGTH_DELIMITED); };
  const auto tag_var = [](int field) { return wfl::MakeTag(field, wfl::WIRETYPE_VARINT); };
  const auto str_size = [](int field, const std::string& v) -> std::size_t {
    return v.empty() ? 0 : cos::VarintSize32(wfl::MakeTag(field, wfl::WIRETYPE_LENGTH_DELIMITED))
                               + wfl::LengthDelimitedSize(v.size());
  };
  const auto u64_size = [](int field, std::uint64_t v) -> std::size_t {
    return v == 0 ? 0 : cos::VarintSize32(wfl::MakeTag(field, wfl::WIRETYPE_VARINT))
                            + cos::VarintSize64(v);
  };
  const auto key_size = [&](const std::string& k, const kv& v) {
    return str_size(1, k) + str_size(2, v.value) + u64_size(3, v.version);
  };
  // The sessions' sizes, once: each is written after its length. ByteSizeLong also caches each
  // outcome's size for SerializeWithCachedSizes below (outcomes live on this agent's thread only).
  std::vector<std::size_t> session_sizes;
  session_sizes.reserve(sessions_.size());
  for (const auto& [id, sess] : sessions_) {
    std::size_t packed = 0, results = 0;
    for (const auto& [seq, r] : sess.results) {
      packed += cos::VarintSize64(seq);
      results += 1 + wfl::LengthDelimitedSize(r->ByteSizeLong()); // tag 4: one byte
    }
    session_sizes.push_back(
        str_size(1, id) + u64_size(2, static_cast<std::uint64_t>(sess.last_active_ns))
        + (packed == 0 ? 0 : 1 + wfl::LengthDelimitedSize(packed)) + results);
  }
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos{&out};
    cos c{&sos};
    const auto put_str = [&](int field, const std::string& v) {
      if (v.empty()) return;
      c.WriteTag(tag_len(field));
      c.WriteVarint32(static_cast<std::uint32_t>(v.size()));
      c.WriteString(v);
    };
    const auto put_u64 = [&](int field, std::uint64_t v) {
      if (v == 0) return;
      c.WriteTag(tag_var(field));
      c.WriteVarint64(v);
    };
    for (const auto& [k, v] : kv_) {
      c.WriteTag(tag_len(v1::MetaStoreSnapshot::kKeysFieldNumber));
      c.WriteVarint32(static_cast<std::uint32_t>(key_size(k, v)));
      put_str(v1::MetaStoreKey::kKeyFieldNumber, k);
      put_str(v1::MetaStoreKey::kValueFieldNumber, v.value);
      put_u64(v1::MetaStoreKey::kVersionFieldNumber, v.version);
    }
    for (const auto& [k, l] : leases_) {
      v1::MetaStoreLease o; // few, and seven fields: the message writes itself
      o.set_key(k);
      o.set_owner(l.owner);
      o.set_expires_ns(l.expires_ns);
      o.set_ttl_ms(l.ttl_ms);
      o.set_epoch(l.epoch);
      o.set_granted_term(l.granted_term);
      o.set_version(l.version);
      c.WriteTag(tag_len(v1::MetaStoreSnapshot::kLeasesFieldNumber));
      c.WriteVarint32(static_cast<std::uint32_t>(o.ByteSizeLong()));
      o.SerializeWithCachedSizes(&c);
    }
    std::size_t i = 0;
    for (const auto& [id, sess] : sessions_) {
      c.WriteTag(tag_len(v1::MetaStoreSnapshot::kSessionsFieldNumber));
      c.WriteVarint32(static_cast<std::uint32_t>(session_sizes[i++]));
      put_str(v1::MetaStoreSession::kClientIdFieldNumber, id);
      put_u64(v1::MetaStoreSession::kLastActiveNsFieldNumber,
              static_cast<std::uint64_t>(sess.last_active_ns));
      if (!sess.results.empty()) {
        std::size_t packed = 0;
        for (const auto& e : sess.results)
          packed += cos::VarintSize64(e.first);
        c.WriteTag(tag_len(v1::MetaStoreSession::kSeqsFieldNumber));
        c.WriteVarint32(static_cast<std::uint32_t>(packed));
        for (const auto& e : sess.results)
          c.WriteVarint64(e.first);
      }
      for (const auto& e : sess.results) {
        c.WriteTag(tag_len(v1::MetaStoreSession::kResultsFieldNumber));
        c.WriteVarint32(static_cast<std::uint32_t>(e.second->GetCachedSize()));
        e.second->SerializeWithCachedSizes(&c);
      }
    }
    put_u64(v1::MetaStoreSnapshot::kLastTimeNsFieldNumber,
            static_cast<std::uint64_t>(last_time_ns_));
    put_u64(v1::MetaStoreSnapshot::kAppliedFieldNumber, applied_);
  }
  return out;
}

status meta_store::restore(const std::string& bytes) {
  v1::MetaStoreSnapshot s; // consumed: the outcomes move out of it
  if (!s.ParseFromString(bytes)) return validation_error("meta store snapshot does not parse");
  std::map<std::string, kv> kvs;
  std::map<std::string, lease_rec> leases;
  std::map<std::string, session> sessions;
  for (const auto& k : s.keys())
    kvs[k.key()] = {k.value(), k.version()};
  for (const auto& l : s.leases())
    leases[l.key()] = {l.owner(), l.expires_ns(),   l.ttl_ms(),
                       l.epoch(), l.granted_term(), l.version()};
  for (auto& ss : *s.mutable_sessions()) {
    if (ss.seqs_size() != ss.results_size())
      return validation_error("meta store snapshot: session '" + ss.client_id()
                              + "' has mismatched seqs and results");
    auto& o = sessions[ss.client_id()];
    o.last_active_ns = ss.last_active_ns();
    for (int i = 0; i < ss.seqs_size(); ++i)
      o.insert(ss.seqs(i),
               std::make_shared<const v1::MetaCommandResult>(std::move(*ss.mutable_results(i))));
  }
  kv_ = std::move(kvs);
  leases_ = std::move(leases);
  sessions_ = std::move(sessions);
  last_time_ns_ = s.last_time_ns();
  applied_ = s.applied();
  return {};
}

} // namespace af::cluster
