// Saga plans on a real node (af.exec, executors, an in-memory journal): the coordinator crashed
// at every event boundary of a 5-step saga, by enumeration, for the success path and for each
// failure point; compensations retried until they succeed; `af exec stuck`, resume and cancel;
// a cancel that makes the saga compensate.
//
// The crash: a journal backend in front of the memory store makes the k-th append of the
// execution's stream fail with `internal`, either after it committed (the executor dies before
// acting on the batch: no dispatch, no reply) or before (the batch is lost, though the step
// results in it were applied by the agents). An executor whose append fails stops, and af.exec's
// supervisor starts a new one that recovers from the journal — what a node restart does, minus
// the process. A test agent applies side effects keyed by the idempotency key, as std.ledger
// does, and records every application.
#include "af/node.hpp"
#include "af/plan/compile.hpp"
#include "af/plan/executor.hpp"
#include "af/store/backend.hpp"
#include "af/store/journal.hpp"
#include "af/v1/exec.pb.h"
#include "af/v1/store.pb.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <mutex>
#include <thread>

using namespace af;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

/// Where the next crash happens: the `at`-th append (1-based) of `stream`, after or before it
/// commits; at 0 the appends are only counted.
struct crash_plan {
  std::mutex m;
  std::string stream;
  int at = 0;
  bool after_commit = true;
  int appends = 0;
  bool fired = false;

  void arm(std::string s, int k, bool after) {
    std::lock_guard l{m};
    stream = std::move(s);
    at = k;
    after_commit = after;
    appends = 0;
    fired = false;
  }
  std::pair<int, bool> seen() {
    std::lock_guard l{m};
    return {appends, fired};
  }
};

/// The memory backend (shared by every journal restart), with crashes per crash_plan.
class crashing_backend final : public store::backend {
public:
  crashing_backend(std::shared_ptr<store::memory_backend> inner, std::shared_ptr<crash_plan> plan)
      : inner_(std::move(inner)), plan_(std::move(plan)) {}

  [[nodiscard]] std::string_view kind() const noexcept override { return "memory"; }
  [[nodiscard]] const std::string& location() const noexcept override { return inner_->location(); }

  std::vector<expected<store::append_result>>
  append_batch(std::span<const store::append_request> batch, time_point now) override {
    std::optional<std::size_t> victim;
    bool after = true;
    {
      std::lock_guard l{plan_->m};
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].stream != plan_->stream) continue;
        if (++plan_->appends == plan_->at && !plan_->fired) {
          plan_->fired = true;
          victim = i;
          after = plan_->after_commit;
        }
      }
    }
    if (!victim) return inner_->append_batch(batch, now);
    std::vector<store::append_request> rest;
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (after || i != *victim) rest.push_back(batch[i]);
    auto results = inner_->append_batch(rest, now);
    std::vector<expected<store::append_result>> out;
    std::size_t j = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (i == *victim) {
        if (after) ++j;
        out.emplace_back(error{errc::internal, after ? "simulated crash after the commit"
                                                     : "simulated crash before the commit"});
        continue;
      }
      out.push_back(std::move(results[j++]));
    }
    return out;
  }

  expected<std::vector<store::event_record>> read(std::string_view s, std::uint64_t v,
                                                  std::size_t m) override {
    return inner_->read(s, v, m);
  }
  expected<std::uint64_t> version(std::string_view s) override { return inner_->version(s); }
  expected<std::vector<store::stream_info>>
  list_streams(std::string_view p, std::string_view t, std::string_view a, std::size_t m) override {
    return inner_->list_streams(p, t, a, m);
  }
  expected<std::optional<store::stream_info>> stream(std::string_view s) override {
    return inner_->stream(s);
  }
  expected<store::compact_result> compact(const store::compact_options& o) override {
    return inner_->compact(o);
  }
  expected<std::uint64_t> storage_bytes() override { return inner_->storage_bytes(); }
  status save_snapshot(const store::snapshot_record& s) override {
    return inner_->save_snapshot(s);
  }
  expected<std::optional<store::snapshot_record>> load_snapshot(std::string_view s) override {
    return inner_->load_snapshot(s);
  }
  expected<store::audit_head> audit_last() override { return inner_->audit_last(); }
  status audit_append(std::span<const store::audit_row> rows) override {
    return inner_->audit_append(rows);
  }
  expected<std::vector<store::audit_row>> audit_read(std::uint64_t f, std::size_t m) override {
    return inner_->audit_read(f, m);
  }
  expected<int> schema_version() override { return inner_->schema_version(); }
  [[nodiscard]] int latest_schema_version() const noexcept override {
    return inner_->latest_schema_version();
  }
  status migrate_to(int target) override { return inner_->migrate_to(target); }

private:
  std::shared_ptr<store::memory_backend> inner_;
  std::shared_ptr<crash_plan> plan_;
};

/// Every side effect the test agent applied, in order.
struct effect_book {
  struct application {
    std::string execution, step, key;
    json input;
  };
  std::mutex m;
  std::vector<application> applied;
  int redelivered = 0; ///< requests for a key already applied (answered, not applied again)

  std::vector<application> of(const std::string& execution) {
    std::lock_guard l{m};
    std::vector<application> out;
    for (const auto& a : applied)
      if (a.execution == execution) out.push_back(a);
    return out;
  }
};

/// test.effect: fails while `step` equals `fail_at` (every attempt, transient) or for the first
/// `fail_times` attempts; otherwise applies the step once per idempotency key and answers
/// {key, applied}. Decides by its input and the attempt only, so a re-dispatch after a crash
/// meets the same behaviour.
class effect_agent : public agent_base<effect_agent> {
public:
  explicit effect_agent(std::shared_ptr<effect_book> book) : book_(std::move(book)) {}
  static void define(handlers<effect_agent>& h) {
    h.kind("test.effect").on(&effect_agent::on_step);
  }
  expected<v1::StepOutput> on_step(context&, const v1::StepRequest& r) {
    auto in = json::parse(r.input_json(), nullptr, false);
    if (!in.is_object()) return validation_error("test.effect: input is not an object");
    if (in.contains("step") && in["step"] == in.value("fail_at", json(0)))
      return error{errc::transient, "test.effect: step " + in["step"].dump() + " refuses"};
    if (r.attempt() <= in.value("fail_times", 0u))
      return error{errc::transient,
                   "test.effect: attempt " + std::to_string(r.attempt()) + " fails"};
    bool duplicate = false;
    {
      std::lock_guard l{book_->m};
      for (const auto& a : book_->applied)
        duplicate = duplicate || a.key == r.idempotency_key();
      if (duplicate)
        ++book_->redelivered;
      else
        book_->applied.push_back({r.execution_id(), r.step_id(), r.idempotency_key(), in});
    }
    v1::StepOutput out;
    out.set_output_json(json{{"key", r.idempotency_key()}, {"applied", !duplicate}}.dump());
    return out;
  }

private:
  std::shared_ptr<effect_book> book_;
};

struct saga_node {
  std::shared_ptr<store::memory_backend> disk{store::make_memory_backend()};
  std::shared_ptr<crash_plan> crash = std::make_shared<crash_plan>();
  std::shared_ptr<effect_book> book = std::make_shared<effect_book>();
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<node> n;

  saga_node() {
    node::options o;
    log_options lo;
    lo.level = log_level::info;
    lo.format = "json";
    o.log = make_memory_log_backend(lo, lines);
    store::journal_options jo;
    jo.open = [d = disk, c = crash]() -> expected<std::unique_ptr<store::backend>> {
      return std::unique_ptr<store::backend>{std::make_unique<crashing_backend>(d, c)};
    };
    jo.blocking = false;
    o.system_services.push_back(store::journal_child(std::move(jo)));
    auto agents = std::make_shared<plan::agent_types>();
    REQUIRE(plan::add_std_agents(*agents, {}));
    REQUIRE(agents->add<effect_agent>("test.effect", book));
    plan::exec_options eo;
    eo.agents = agents;
    o.system_services.push_back(plan::exec_child(std::move(eo)));
    auto r = node::start(std::move(o));
    REQUIRE(r);
    n = std::move(r).value();
  }
  ~saga_node() {
    if (n) n->shutdown();
  }

  expected<v1::ExecutionInfo> start(const v1::PlanIR& p, const std::string& id,
                                    std::string inputs = "{}", v1::ExecMode mode = v1::EXEC_AUTO) {
    v1::StartExecution s;
    *s.mutable_plan() = p;
    s.set_inputs_json(std::move(inputs));
    s.set_by("test");
    s.set_execution_id(id);
    s.set_mode(mode);
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, s, 60s);
  }
  expected<v1::ExecutionInfo> show(const std::string& id) {
    v1::ExecutionRef r;
    r.set_execution_id(id);
    r.set_steps(true);
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, r, 30s);
  }
  expected<v1::ExecutionInfo> control(const std::string& id, v1::ExecControl::Op op,
                                      std::string reason = {}) {
    v1::ExecControl c;
    c.set_execution_id(id);
    c.set_op(op);
    c.set_by("ops");
    c.set_reason(std::move(reason));
    return n->ask<v1::ExecutionInfo>(plan::k_exec_agent, c, 30s);
  }
  template <class P>
  v1::ExecutionInfo until(const std::string& id, P pred) {
    std::string last;
    for (int i = 0; i < 3000; ++i) {
      auto s = show(id);
      if (s && pred(*s)) return *s;
      last = s ? s->ShortDebugString() : s.error().to_string();
      std::this_thread::sleep_for(5ms);
    }
    FAIL("condition not reached for " << id << "; last: " << last);
    return {};
  }
  v1::ExecutionInfo until_ended(const std::string& id) {
    return until(id, [](const v1::ExecutionInfo& i) {
      return i.status() == v1::EXEC_COMPLETED || i.status() == v1::EXEC_FAILED
             || i.status() == v1::EXEC_CANCELED;
    });
  }
  /// The execution's journal events by type name, in order.
  std::vector<std::string> event_types(const std::string& id) {
    v1::ReadRequest q;
    q.set_stream(plan::stream_of(id));
    q.set_max(10000);
    auto rr = n->ask<v1::ReadResult>(store::k_journal_agent, q, 10s);
    REQUIRE(rr);
    std::vector<std::string> out;
    for (const auto& e : rr->events())
      out.push_back(e.type());
    return out;
  }
};

v1::PlanIR compile(const std::string& yaml) {
  auto p = plan::compile_text(yaml, "saga.yaml");
  if (!p) FAIL(p.error().to_string());
  return *p;
}

/// Five steps of test.effect; `fail_at` makes that step fail on both of its attempts. Each
/// compensation undoes its step by the key of its action (${steps.ID.output.key}) and names the
/// step by its input (${steps.ID.input.step}); s2's compensation fails twice before it succeeds.
std::string five_step_saga() {
  std::string y = R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: saga-five}
spec:
  type: saga
  inputs:
    fail_at: 0
  steps:
)";
  for (int i = 1; i <= 5; ++i) {
    const auto id = "s" + std::to_string(i);
    y += "    - id: " + id + "\n      agent: test.effect\n      input: {step: " + std::to_string(i)
         + ", fail_at: \"${inputs.fail_at}\"}\n      retry: {max_attempts: 2, backoff: 5ms}\n"
           "      compensate:\n        agent: test.effect\n"
           "        input: {undo: \"${steps."
         + id + ".output.key}\", of_step: \"${steps." + id + ".input.step}\""
         + (i == 2 ? ", fail_times: 2" : "")
         + "}\n        retry: {backoff: 5ms, max_backoff: 20ms}\n";
  }
  return y;
}

/// Checks the end of one run of five_step_saga: all completed (fail_at 0) or all compensated,
/// every action and compensation applied at most once (and each that had to be, exactly once).
void check_end(saga_node& t, const std::string& id, int fail_at, const v1::ExecutionInfo& end) {
  INFO("execution " << id << ": " << end.ShortDebugString());
  const auto applied = t.book->of(id);
  std::vector<std::string> steps;
  std::map<std::string, std::string> key_of_step;
  for (const auto& a : applied) {
    steps.push_back(a.step);
    key_of_step[a.step] = a.key;
  }
  std::vector<std::string> want;
  if (fail_at == 0) {
    CHECK(end.status() == v1::EXEC_COMPLETED);
    CHECK(end.saga_state() == "completed");
    for (int i = 1; i <= 5; ++i)
      want.push_back("s" + std::to_string(i));
  } else {
    CHECK(end.status() == v1::EXEC_FAILED);
    CHECK(end.saga_state() == "compensated");
    CHECK_THAT(end.error(), Catch::Contains("step 's" + std::to_string(fail_at) + "' failed"));
    for (int i = 1; i < fail_at; ++i)
      want.push_back("s" + std::to_string(i));
    for (int i = fail_at - 1; i >= 1; --i)
      want.push_back("s" + std::to_string(i) + ".compensate");
  }
  CHECK(steps == want); // in this order, each once
  for (const auto& a : applied) {
    // One key per saga step, whatever the attempt.
    CHECK(a.key == id + "/" + a.step);
    if (a.step.find(".compensate") == std::string::npos) continue;
    const auto of = a.step.substr(0, a.step.find('.'));
    CHECK(a.input["undo"] == key_of_step[of]);
    CHECK(a.input["of_step"] == std::stoi(of.substr(1)));
  }
  // s2's compensation failed on attempts 1 and 2, and was retried until it succeeded.
  for (const auto& s : end.steps()) {
    if (s.step_id() != "s2.compensate") continue;
    CHECK(s.state() == "completed");
    CHECK(s.attempt() == 3);
  }
}

} // namespace

TEST_CASE("saga: the coordinator crashes at every event boundary of a 5-step saga - the end is "
          "all-completed or all-compensated, each side effect applied at most once",
          "[saga][exec]") {
  saga_node t;
  const auto plan = compile(five_step_saga());
  int runs = 0, redelivered_before = 0;
  for (int fail_at = 0; fail_at <= 5; ++fail_at) {
    const std::string inputs = json{{"fail_at", fail_at}}.dump();
    // The run without a crash: how many appends the execution makes.
    const std::string base_id = "saga-f" + std::to_string(fail_at) + "-base";
    t.crash->arm(plan::stream_of(base_id), 0, true);
    REQUIRE(t.start(plan, base_id, inputs));
    check_end(t, base_id, fail_at, t.until_ended(base_id));
    const int boundaries = t.crash->seen().first;
    INFO("fail_at " << fail_at << ": " << boundaries << " appends");
    CHECK(boundaries >= 4); // start, s1 failed (retry), its second attempt, the end
    for (int k = 1; k <= boundaries; ++k)
      for (bool after : {true, false}) {
        const std::string id = "saga-f" + std::to_string(fail_at) + "-" + std::to_string(k)
                               + (after ? "-after" : "-before");
        INFO("crash " << (after ? "after" : "before") << " append " << k << " of " << id);
        t.crash->arm(plan::stream_of(id), k, after);
        REQUIRE(t.start(plan, id, inputs));
        const auto end = t.until_ended(id);
        CHECK(t.crash->seen().second); // the crash happened
        check_end(t, id, fail_at, end);
        ++runs;
      }
  }
  {
    std::lock_guard l{t.book->m};
    redelivered_before = t.book->redelivered;
  }
  // Crashes before a commit lose results the agents had applied: those steps were dispatched
  // again with the same key and not applied twice.
  CHECK(redelivered_before > 0);
  CHECK(runs >= 100);
  std::cout << "saga crash enumeration: " << runs << " crashed runs, " << redelivered_before
            << " redeliveries answered without a second application" << std::endl;
}

TEST_CASE("saga: compensations retry until they succeed - journal and state say so",
          "[saga][exec]") {
  saga_node t;
  const auto plan = compile(five_step_saga());
  REQUIRE(t.start(plan, "retry-3", json{{"fail_at", 3}}.dump()));
  const auto end = t.until_ended("retry-3");
  check_end(t, "retry-3", 3, end);
  const auto types = t.event_types("retry-3");
  auto count = [&](const std::string& type) {
    return std::count(types.begin(), types.end(), "af.v1." + type);
  };
  CHECK(count("SagaCompensating") == 1);
  CHECK(count("StepRetried") == 3); // s3 once (2 attempts), s2.compensate twice
  CHECK(count("ExecutionFailed") == 1);
  // The forward order, then the compensation, then the end.
  CHECK(types.front() == "af.v1.ExecutionStarted");
  CHECK(types.back() == "af.v1.ExecutionFailed");
  bool s2c_completed = false;
  for (const auto& s : end.steps())
    if (s.step_id() == "s2.compensate") {
      s2c_completed = s.state() == "completed" && s.attempt() == 3;
    }
  CHECK(s2c_completed);
}

namespace {

const char* k_stubborn = R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: stubborn}
spec:
  type: saga
  steps:
    - id: reserve
      agent: test.effect
      input: {what: seat}
      compensate:
        agent: test.effect
        input: {release: "${steps.reserve.output.key}", fail_times: 1000000}
        retry: {backoff: 5ms, max_backoff: 10ms}
    - id: notify
      agent: test.effect
      input: {what: mail}
      compensate: none
    - id: charge
      agent: test.effect
      input: {step: 3, fail_at: 3}
      compensate: {agent: test.effect}
)";

} // namespace

TEST_CASE("saga: an operator marks a compensating saga stuck - af exec list shows it - resume "
          "and cancel",
          "[saga][exec]") {
  saga_node t;
  const auto plan = compile(k_stubborn);
  REQUIRE(t.start(plan, "stubborn"));
  // charge fails, reserve's compensation keeps failing (notify has nothing to undo).
  t.until("stubborn", [](const v1::ExecutionInfo& i) {
    for (const auto& s : i.steps())
      if (s.step_id() == "reserve.compensate" && s.attempt() >= 3) return true;
    return false;
  });
  auto list = [&] {
    v1::ListExecutions l;
    auto r = t.n->ask<v1::ExecutionList>(plan::k_exec_agent, l, 10s);
    REQUIRE(r);
    for (const auto& i : r->executions())
      if (i.execution_id() == "stubborn") return i;
    FAIL("af exec list does not show the execution");
    return v1::ExecutionInfo{};
  };
  CHECK(list().saga_state() == "compensating");
  // Only a compensating saga can be marked stuck; this one can, once.
  auto stuck = t.control("stubborn", v1::ExecControl::STUCK, "the seat API is gone");
  REQUIRE(stuck);
  CHECK(stuck->status() == v1::EXEC_PAUSED);
  CHECK(stuck->saga_state() == "stuck");
  auto again = t.control("stubborn", v1::ExecControl::STUCK);
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == errc::conflict);
  CHECK_THAT(again.error().message(), Catch::Contains("already stuck"));
  const auto listed = list();
  CHECK(listed.saga_state() == "stuck");
  CHECK(listed.status() == v1::EXEC_PAUSED);
  // No further attempt is scheduled while stuck (the one in flight, if any, ends).
  std::this_thread::sleep_for(50ms);
  const auto attempts = [&] {
    const auto info = t.show("stubborn");
    REQUIRE(info);
    for (const auto& s : info->steps())
      if (s.step_id() == "reserve.compensate") return s.attempt();
    return 0u;
  };
  const auto frozen = attempts();
  std::this_thread::sleep_for(100ms);
  CHECK(attempts() == frozen);
  // Resume: the compensation is tried again.
  auto resumed = t.control("stubborn", v1::ExecControl::RESUME);
  REQUIRE(resumed);
  CHECK(resumed->saga_state() == "compensating");
  t.until("stubborn", [&](const v1::ExecutionInfo& i) {
    for (const auto& s : i.steps())
      if (s.step_id() == "reserve.compensate") return s.attempt() > frozen + 1;
    return false;
  });
  REQUIRE(t.control("stubborn", v1::ExecControl::STUCK));
  // Cancel ends it: the saga stays stuck (reserve was never undone), for good.
  auto canceled = t.control("stubborn", v1::ExecControl::CANCEL, "undone by hand");
  REQUIRE(canceled);
  const auto end = t.until_ended("stubborn");
  CHECK(end.status() == v1::EXEC_CANCELED);
  CHECK(end.saga_state() == "stuck");
  v1::ListExecutions all;
  all.set_all(true);
  auto l = t.n->ask<v1::ExecutionList>(plan::k_exec_agent, all, 10s);
  REQUIRE(l);
  bool seen = false;
  for (const auto& i : l->executions())
    if (i.execution_id() == "stubborn") seen = i.saga_state() == "stuck";
  CHECK(seen);
  // Applied: reserve and notify; never a compensation (every attempt failed).
  std::vector<std::string> applied;
  for (const auto& a : t.book->of("stubborn"))
    applied.push_back(a.step);
  CHECK(applied == std::vector<std::string>{"reserve", "notify"});
  const auto types = t.event_types("stubborn");
  CHECK(std::count(types.begin(), types.end(), "af.v1.SagaStuck") == 2);
}

TEST_CASE("saga: stuck is refused while the saga runs forward - a cancel (even of a paused saga) "
          "compensates the completed steps once the running one ends",
          "[saga][exec]") {
  saga_node t;
  const auto plan = compile(R"(apiVersion: agentflow/v1
kind: Plan
metadata: {name: cancel-me}
spec:
  type: saga
  steps:
    - id: book
      agent: test.effect
      input: {what: room}
      compensate: {agent: test.effect, input: {undo: "${steps.book.output.key}"}}
    - id: hold
      agent: std.sleep
      input: {duration: 300ms}
      compensate: {agent: test.effect, input: {unhold: "${steps.hold.output.slept_ms}"}}
    - id: never
      agent: test.effect
      compensate: {agent: test.effect}
)");
  REQUIRE(t.start(plan, "cancel-me"));
  t.until("cancel-me", [](const v1::ExecutionInfo& i) { return i.steps_completed() == 1; });
  auto refused = t.control("cancel-me", v1::ExecControl::STUCK);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::conflict);
  CHECK_THAT(refused.error().message(), Catch::Contains("the saga is running, not compensating"));
  REQUIRE(t.control("cancel-me", v1::ExecControl::PAUSE));
  auto c = t.control("cancel-me", v1::ExecControl::CANCEL, "trip called off");
  REQUIRE(c);
  CHECK(c->status() == v1::EXEC_RUNNING); // the cancel resumed it: it compensates
  auto twice = t.control("cancel-me", v1::ExecControl::CANCEL);
  REQUIRE_FALSE(twice);
  CHECK_THAT(twice.error().message(), Catch::Contains("already canceled"));
  const auto end = t.until_ended("cancel-me");
  CHECK(end.status() == v1::EXEC_FAILED);
  CHECK(end.saga_state() == "compensated");
  CHECK_THAT(end.error(), Catch::Contains("canceled by ops: trip called off"));
  std::vector<std::string> applied;
  for (const auto& a : t.book->of("cancel-me"))
    applied.push_back(a.step);
  // hold completed after the cancel: it is undone too, newest first; `never` never ran.
  CHECK(applied == std::vector<std::string>{"book", "hold.compensate", "book.compensate"});
  const auto types = t.event_types("cancel-me");
  CHECK(std::count(types.begin(), types.end(), "af.v1.ExecutionCanceled") == 1);
  CHECK(types.back() == "af.v1.ExecutionFailed");
}
