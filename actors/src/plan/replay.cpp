#include "plan/replay.hpp"

#include "af/hash.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

namespace af::plan {

namespace {

std::string bytes_of(const v1::ExecEvent& e) {
  std::string s;
  google::protobuf::io::StringOutputStream os{&s};
  google::protobuf::io::CodedOutputStream cos{&os};
  cos.SetSerializationDeterministic(true);
  e.SerializeToCodedStream(&cos);
  cos.Trim();
  return s;
}

/// A running SHA-256 over a sequence of events (each hashed, then chained).
class chain {
public:
  void add(const v1::ExecEvent& e) {
    const auto d = sha256(bytes_of(e));
    std::string buf{reinterpret_cast<const char*>(h_.data()), h_.size()};
    buf.append(reinterpret_cast<const char*>(d.data()), d.size());
    h_ = sha256(buf);
  }
  [[nodiscard]] std::string hex() const { return to_hex(h_); }

private:
  digest h_{};
};

} // namespace

expected<replay_result> replay(const std::vector<v1::ExecEvent>& recorded,
                               const v1::PlanIR* plan) {
  if (recorded.empty() || !recorded.front().has_started())
    return validation_error("replay: the recorded events do not start with ExecutionStarted");
  replay_result r;
  chain rec, rep;
  for (const auto& e : recorded)
    rec.add(e);
  v1::ExecEvent first = recorded.front();
  if (plan != nullptr) *first.mutable_started()->mutable_plan() = *plan;
  auto eng = engine::make(first.started());
  if (!eng) return std::move(eng).error();
  r.eng = std::move(eng).value();
  rep.add(recorded.front());
  auto diverge = [&](std::size_t i, std::string what) {
    r.compatible = false;
    r.divergence = "event " + std::to_string(i + 1) + ": " + std::move(what);
  };
  std::size_t i = 1;
  for (;;) {
    for (auto& d : r.eng->decide()) {
      if (!r.compatible) {
        rep.add(d);
        continue;
      }
      // The executor records StepStarted right after the StepScheduled it dispatches at once.
      while (i < recorded.size() && recorded[i].has_step_started()) {
        rep.add(recorded[i]);
        (void)r.eng->input(recorded[i]);
        ++i;
      }
      rep.add(d);
      if (i >= recorded.size()) {
        // The history ends here: an unfinished execution continues with these decisions. (A
        // recorded cancel that ended the execution leaves the engine deciding nothing; a
        // saga's cancel does not end it: it compensates.)
        if (recorded.back().has_exec_completed() || recorded.back().has_exec_failed())
          diverge(i, "the recorded execution had ended, but the replay decided " + describe(d));
        else
          r.pending.push_back(d);
        continue;
      }
      if (bytes_of(recorded[i]) != bytes_of(d)) {
        diverge(i, "recorded " + describe(recorded[i]) + ", the replay decided " + describe(d));
        continue;
      }
      ++i;
    }
    if (!r.compatible || i >= recorded.size()) break;
    const auto& e = recorded[i];
    if (is_decision(e)) {
      diverge(i, "recorded " + describe(e) + ", the replay decided nothing");
      break;
    }
    rep.add(e);
    (void)r.eng->input(e);
    ++i;
  }
  r.events_checked = std::min(i, recorded.size());
  r.recorded_hash = rec.hex();
  r.replay_hash = rep.hex();
  return r;
}

} // namespace af::plan
