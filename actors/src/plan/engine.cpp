// The engine's shared part: inputs, retries, in-flight tracking and the end of an execution;
// the plan types (engine_dag.cpp, engine_fsm.cpp, engine_bt.cpp) decide what runs next.
#include "plan/engine.hpp"

#include "af/hash.hpp"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>

namespace af::plan {

using started_ptr = std::shared_ptr<const v1::ExecutionStarted>;
std::unique_ptr<engine> make_dag_engine(started_ptr s, error& err);
std::unique_ptr<engine> make_fsm_engine(started_ptr s, error& err);
std::unique_ptr<engine> make_bt_engine(started_ptr s, error& err);
std::unique_ptr<engine> make_saga_engine(started_ptr s, error& err);

namespace {

nlohmann::json parse_or_string(const std::string& text) {
  if (text.empty()) return nullptr;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return text;
  return j;
}

} // namespace

engine::engine(std::shared_ptr<const v1::ExecutionStarted> started)
    : started_(std::move(started)), inputs_(parse_or_string(started_->inputs_json())) {
  if (!inputs_.is_object()) inputs_ = nlohmann::json::object();
}

expected<std::unique_ptr<engine>> engine::make(const v1::ExecutionStarted& started) {
  return make(std::make_shared<const v1::ExecutionStarted>(started));
}

expected<std::unique_ptr<engine>> engine::make(started_ptr started) {
  error err{errc::internal, {}};
  std::unique_ptr<engine> e;
  switch (started->plan().type()) {
  case v1::PLAN_DAG:
    e = make_dag_engine(std::move(started), err);
    break;
  case v1::PLAN_FSM:
    e = make_fsm_engine(std::move(started), err);
    break;
  case v1::PLAN_BT:
    e = make_bt_engine(std::move(started), err);
    break;
  case v1::PLAN_SAGA:
    e = make_saga_engine(std::move(started), err);
    break;
  default:
    return validation_error("execution " + started->execution_id() + ": plan '"
                            + started->plan().name() + "' has no type (dag, fsm, bt or saga)");
  }
  if (!e) return err;
  return e;
}

std::string engine::key_of(std::string_view execution_id, std::string_view step_id,
                           std::uint32_t attempt) {
  std::string k;
  k.reserve(execution_id.size() + step_id.size() + 12);
  k.append(execution_id).append("/").append(step_id).append("/").append(std::to_string(attempt));
  return k;
}

bool engine::input(const v1::ExecEvent& e, std::string* why) {
  auto ignore = [&](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return false;
  };
  if (finished()) return ignore("the execution has ended");
  switch (e.event_case()) {
  case v1::ExecEvent::kStepStarted:
    return in_flight_.contains(e.step_started().step_id()) || ignore("step not in flight");
  case v1::ExecEvent::kCompleted: {
    const auto& c = e.completed();
    auto it = in_flight_.find(c.step_id());
    if (it == in_flight_.end() || it->second.attempt() != c.attempt())
      return ignore("step '" + c.step_id() + "' attempt " + std::to_string(c.attempt())
                    + " is not in flight (a duplicate or late result)");
    v1::StepScheduled s = std::move(it->second);
    in_flight_.erase(it);
    ++completed_;
    view(s.step_id(), "completed", s.attempt(), c.output_json());
    auto& out = outputs_[s.step_id()];
    out = parse_or_string(c.output_json());
    on_success(s, out);
    return true;
  }
  case v1::ExecEvent::kFailed: {
    const auto& f = e.failed();
    auto it = in_flight_.find(f.step_id());
    if (it == in_flight_.end() || it->second.attempt() != f.attempt())
      return ignore("step '" + f.step_id() + "' attempt " + std::to_string(f.attempt())
                    + " is not in flight (a duplicate or late result)");
    v1::StepScheduled s = std::move(it->second);
    in_flight_.erase(it);
    retry_or_fail(s, f);
    return true;
  }
  case v1::ExecEvent::kPaused:
    if (paused_) return ignore("already paused");
    paused_ = true;
    status_ = v1::EXEC_PAUSED;
    return true;
  case v1::ExecEvent::kResumed:
    if (!paused_) return ignore("not paused");
    paused_ = false;
    status_ = v1::EXEC_RUNNING;
    on_resumed();
    return true;
  case v1::ExecEvent::kStuck:
    if (!on_stuck(e.stuck(), why)) return false;
    paused_ = true;
    status_ = v1::EXEC_PAUSED;
    return true;
  case v1::ExecEvent::kCanceled:
    if (auto taken = on_cancel(e.canceled(), why)) return *taken;
    status_ = v1::EXEC_CANCELED;
    error_ = "canceled by " + e.canceled().by()
             + (e.canceled().reason().empty() ? "" : ": " + e.canceled().reason());
    for (auto& [id, s] : in_flight_)
      abandoned_.push_back(s);
    in_flight_.clear();
    return true;
  default:
    return ignore("not an input: " + describe(e));
  }
}

void engine::retry_or_fail(const v1::StepScheduled& s, const v1::StepFailed& f) {
  errc kind = errc::internal;
  (void)from_string(f.error_kind(), kind);
  const auto& p = s.call().retry();
  const std::uint32_t max = std::max<std::uint32_t>(1, p.max_attempts());
  const auto rule = retry_rule_for(s);
  if (rule == retry_rule::always
      || (rule == retry_rule::policy && !strict() && retryable(kind) && s.attempt() < max)) {
    view(s.step_id(), "retrying", s.attempt(), {}, f.error_kind() + ": " + f.message());
    retries_.emplace_back(s, backoff_ms(p, s.attempt() + 1, s.idempotency_key()));
    return;
  }
  ++failed_;
  view(s.step_id(), "failed", s.attempt(), {}, f.error_kind() + ": " + f.message());
  step_failed(s, f);
}

void engine::step_failed(const v1::StepScheduled& s, const v1::StepFailed& f) {
  if (!strict() || !strict_fails_at_once()) {
    on_failure(s, f);
    return;
  }
  if (strict_failure_) return;
  errc kind = errc::internal;
  (void)from_string(f.error_kind(), kind);
  strict_failure_.emplace(kind, "step '" + s.step_id() + "' failed (strict mode): "
                                    + f.error_kind() + ": " + f.message());
  strict_step_ = s.step_id();
}

std::vector<v1::ExecEvent> engine::decide() {
  std::vector<v1::ExecEvent> out;
  if (finished() || paused_) return out;
  while (!retries_.empty()) {
    auto [s, delay] = std::move(retries_.front());
    retries_.pop_front();
    auto& r = *out.emplace_back().mutable_retried();
    r.set_step_id(s.step_id());
    r.set_next_attempt(s.attempt() + 1);
    r.set_backoff_ms(delay);
    auto& n = *out.emplace_back().mutable_scheduled();
    n = s;
    n.set_attempt(s.attempt() + 1);
    n.set_idempotency_key(key_for(s.step_id(), n.attempt()));
    n.set_delay_ms(delay);
    in_flight_[n.step_id()] = n;
    view(n.step_id(), "scheduled", n.attempt());
  }
  if (!strict_failure_) plan(out);
  if (strict_failure_ && !finished()) fail_execution(out, *strict_failure_, strict_step_);
  return out;
}

std::vector<v1::StepScheduled> engine::take_abandoned() {
  std::vector<v1::StepScheduled> r;
  r.swap(abandoned_);
  return r;
}

void engine::schedule(std::vector<v1::ExecEvent>& out, const std::string& step_id,
                      std::uint32_t attempt, const v1::Call& call, const nlohmann::json& input,
                      const std::string& parent, const nlohmann::json* item,
                      std::int64_t delay_ms) {
  auto& s = *out.emplace_back().mutable_scheduled();
  s.set_step_id(step_id);
  s.set_attempt(attempt);
  s.set_idempotency_key(key_for(step_id, attempt));
  s.set_input_json(input.dump());
  *s.mutable_call() = call;
  if (item != nullptr) s.set_item_json(item->dump());
  s.set_delay_ms(delay_ms);
  s.set_parent_step(parent);
  in_flight_[step_id] = s;
  view(step_id, "scheduled", attempt);
}

expected<nlohmann::json> engine::render_input(const v1::Call& call, const std::string& step_id,
                                              const nlohmann::json* item, bool reuse) const {
  auto parse = [&] {
    return call.input_json().empty() ? nlohmann::json::object()
                                     : nlohmann::json::parse(call.input_json(), nullptr, false);
  };
  nlohmann::json once;
  const nlohmann::json* tmpl = nullptr;
  if (auto it = templates_.find(&call); it != templates_.end()) {
    tmpl = &it->second;
  } else if (reuse) {
    tmpl = &templates_.emplace(&call, parse()).first->second;
  } else {
    once = parse();
    tmpl = &once;
  }
  if (tmpl->is_discarded())
    return validation_error("step '" + step_id + "': the input template is not JSON");
  auto r = render(*tmpl, scope(item));
  if (!r) return validation_error("step '" + step_id + "': input: " + r.error().message());
  return r;
}

void engine::fail_step(std::vector<v1::ExecEvent>& out, const std::string& step_id,
                       const v1::Call& call, const error& e, const std::string& parent,
                       std::uint32_t attempt) {
  v1::StepScheduled s;
  s.set_step_id(step_id);
  s.set_attempt(attempt);
  s.set_idempotency_key(key_for(step_id, attempt));
  *s.mutable_call() = call;
  s.set_parent_step(parent);
  auto& f = *out.emplace_back().mutable_failed();
  f.set_step_id(step_id);
  f.set_attempt(attempt);
  f.set_error_kind(std::string{to_string(e.code())});
  f.set_message(e.message());
  ++failed_;
  view(step_id, "failed", attempt, {}, e.to_string());
  step_failed(s, f);
}

void engine::complete(std::vector<v1::ExecEvent>& out, const nlohmann::json& outputs) {
  outputs_json_ = outputs.dump();
  out.emplace_back().mutable_exec_completed()->set_outputs_json(outputs_json_);
  status_ = v1::EXEC_COMPLETED;
  for (auto& [id, s] : in_flight_)
    abandoned_.push_back(s);
  in_flight_.clear();
}

void engine::fail_execution(std::vector<v1::ExecEvent>& out, const error& e,
                            const std::string& step) {
  auto& f = *out.emplace_back().mutable_exec_failed();
  f.set_error_kind(std::string{to_string(e.code())});
  f.set_message(e.message());
  f.set_step_id(step);
  error_ = e.to_string();
  status_ = v1::EXEC_FAILED;
  for (auto& [id, s] : in_flight_)
    abandoned_.push_back(s);
  in_flight_.clear();
}

void engine::abandon(const std::string& step_id) {
  auto it = in_flight_.find(step_id);
  if (it == in_flight_.end()) return;
  abandoned_.push_back(std::move(it->second));
  in_flight_.erase(it);
  view(step_id, "abandoned", abandoned_.back().attempt());
}

expr_scope engine::scope(const nlohmann::json* item) const {
  expr_scope sc;
  sc.inputs = &inputs_;
  sc.step_output = [this](std::string_view id) { return output_of(id); };
  sc.step_input = [this](std::string_view id) { return input_of(id); };
  sc.item = item;
  return sc;
}

const nlohmann::json* engine::output_of(std::string_view id) const {
  auto it = outputs_.find(id);
  return it == outputs_.end() ? nullptr : &it->second;
}

void engine::view(const std::string& step_id, std::string state, std::uint32_t attempt,
                  std::string output_json, std::string error) {
  auto& v = views_[step_id];
  v.state = std::move(state);
  v.attempt = attempt;
  if (!output_json.empty()) v.output_json = std::move(output_json);
  if (!error.empty()) v.error = std::move(error);
  else if (v.state == "completed") v.error.clear(); // an earlier attempt's error is history
}

std::int64_t backoff_ms(const v1::RetryPolicy& p, std::uint32_t next, std::string_view key) {
  const double base = p.backoff_ms() > 0 ? static_cast<double>(p.backoff_ms()) : 100.0;
  const double mult = p.multiplier() > 0 ? p.multiplier() : 2.0;
  const double cap = p.max_backoff_ms() > 0 ? static_cast<double>(p.max_backoff_ms()) : 60000.0;
  double d = std::min(cap, base * std::pow(mult, static_cast<double>(next) - 2.0));
  // Jitter that is the same on every replay: the first byte of a hash of the key.
  const auto h = sha256(key);
  const double jitter = 0.8 + 0.4 * (static_cast<double>(h[0]) / 255.0);
  return static_cast<std::int64_t>(std::llround(d * jitter));
}

namespace {

const google::protobuf::Message* inner(const v1::ExecEvent& e) {
  // A switch, not reflection (a descriptor lookup by field number for every event journaled).
  switch (e.event_case()) {
  case v1::ExecEvent::kStarted:
    return &e.started();
  case v1::ExecEvent::kScheduled:
    return &e.scheduled();
  case v1::ExecEvent::kStepStarted:
    return &e.step_started();
  case v1::ExecEvent::kCompleted:
    return &e.completed();
  case v1::ExecEvent::kFailed:
    return &e.failed();
  case v1::ExecEvent::kRetried:
    return &e.retried();
  case v1::ExecEvent::kPaused:
    return &e.paused();
  case v1::ExecEvent::kResumed:
    return &e.resumed();
  case v1::ExecEvent::kCanceled:
    return &e.canceled();
  case v1::ExecEvent::kExecCompleted:
    return &e.exec_completed();
  case v1::ExecEvent::kExecFailed:
    return &e.exec_failed();
  case v1::ExecEvent::kStuck:
    return &e.stuck();
  case v1::ExecEvent::kCompensating:
    return &e.compensating();
  default:
    break;
  }
  // A case added to the proto and not above: reflection still finds it.
  const auto* d = v1::ExecEvent::descriptor()->FindFieldByNumber(e.event_case());
  if (d == nullptr) return nullptr;
  return &e.GetReflection()->GetMessage(e, d);
}

} // namespace

std::string event_type(const v1::ExecEvent& e) {
  const auto* m = inner(e);
  return m == nullptr ? std::string{} : m->GetDescriptor()->full_name();
}

std::string event_payload(const v1::ExecEvent& e) {
  const auto* m = inner(e);
  return m == nullptr ? std::string{} : m->SerializeAsString();
}

expected<v1::ExecEvent> event_from(std::string_view type, std::string_view payload) {
  v1::ExecEvent e;
  const auto* desc = v1::ExecEvent::descriptor();
  for (int i = 0; i < desc->field_count(); ++i) {
    const auto* f = desc->field(i);
    if (f->message_type()->full_name() != type) continue;
    auto* m = e.GetReflection()->MutableMessage(&e, f);
    if (!m->ParseFromArray(payload.data(), static_cast<int>(payload.size())))
      return validation_error("journal event of type '" + std::string{type}
                              + "': the payload does not parse");
    return e;
  }
  return validation_error("journal event of type '" + std::string{type}
                          + "' is not an execution event");
}

std::string describe(const v1::ExecEvent& e) {
  const auto* m = inner(e);
  if (m == nullptr) return "(empty event)";
  std::string text;
  google::protobuf::TextFormat::Printer p;
  p.SetSingleLineMode(true);
  p.PrintToString(*m, &text);
  while (!text.empty() && text.back() == ' ')
    text.pop_back();
  return m->GetDescriptor()->name() + "{" + text + "}";
}

bool is_decision(const v1::ExecEvent& e) {
  switch (e.event_case()) {
  case v1::ExecEvent::kScheduled:
  case v1::ExecEvent::kRetried:
  case v1::ExecEvent::kExecCompleted:
  case v1::ExecEvent::kExecFailed:
  case v1::ExecEvent::kCompensating:
    return true;
  default:
    return false;
  }
}

} // namespace af::plan
