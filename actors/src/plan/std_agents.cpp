// The built-in agents plans call: std.echo, std.sleep, std.fail and std.counter (std.ledger is
// in std_ledger.cpp). Each answers af.v1.StepRequest with af.v1.StepOutput or an error, and
// ignores af.v1.StepCancel unless it has something in flight to cancel (std.sleep).
#include "plan/std_agents.hpp"

#include "af/duration_text.hpp"
#include "af/v1/exec.pb.h"
#include "plan/step_io.hpp"

#include <google/protobuf/wrappers.pb.h>

#include <chrono>
#include <map>

namespace af::plan {

namespace {

using detail::make_output;
using detail::parse_object_input;
using nlohmann::json;

/// std.echo: the output is the input.
class echo_agent : public agent_base<echo_agent> {
public:
  static void define(handlers<echo_agent>& h) {
    h.kind("std.echo").on(&echo_agent::on_step).on(&echo_agent::on_cancel);
  }
  expected<v1::StepOutput> on_step(context&, const v1::StepRequest& req) {
    auto in = detail::parse_input("std.echo", req.input_json());
    if (!in) return std::move(in).error();
    return make_output(*in);
  }
  void on_cancel(context&, const v1::StepCancel&) {} // nothing in flight
};

/// The longest sleep std.sleep accepts: a week.
constexpr std::int64_t k_max_sleep_ms = 7LL * 24 * 3600 * 1000;

/// std.sleep: replies {slept_ms: N} after N ms of node time (virtual under the simulator). The
/// wait is a timer, never a blocked thread; StepCancel with the step's idempotency key fails the
/// pending reply at once.
class sleep_agent : public agent_base<sleep_agent> {
public:
  static void define(handlers<sleep_agent>& h) {
    h.kind("std.sleep")
        .on(&sleep_agent::on_step)
        .on(&sleep_agent::on_cancel)
        .on(&sleep_agent::on_wake);
  }

  void on_step(context& ctx, const v1::StepRequest& req, responder<v1::StepOutput> reply) {
    auto ms = sleep_ms(req);
    if (!ms) return reply.fail(std::move(ms).error());
    if (!reply.pending()) return; // a tell: nobody waits for the reply
    const std::uint64_t token = ++last_token_;
    pending_.emplace(token, waiting{req.idempotency_key(), *ms, std::move(reply)});
    // The timer is a message to ourselves carrying the token of the sleep it ends.
    google::protobuf::UInt64Value wake;
    wake.set_value(token);
    ctx.schedule(std::chrono::milliseconds{*ms}, wake);
  }

  void on_wake(context&, const google::protobuf::UInt64Value& wake) {
    auto it = pending_.find(wake.value());
    if (it == pending_.end()) return; // canceled meanwhile
    auto w = std::move(it->second);
    pending_.erase(it);
    w.reply.reply(make_output(json{{"slept_ms", w.ms}}));
  }

  void on_cancel(context& ctx, const v1::StepCancel& c) {
    const std::string why = "canceled: " + (c.reason().empty() ? "no reason given" : c.reason());
    std::size_t n = 0;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.key != c.idempotency_key()) {
        ++it;
        continue;
      }
      it->second.reply.fail(internal_error(why));
      it = pending_.erase(it);
      ++n;
    }
    ctx.log().debug("sleep_canceled", why,
                    {{"idempotency_key", c.idempotency_key()}, {"pending", n}});
  }

private:
  struct waiting {
    std::string key;
    std::int64_t ms = 0;
    responder<v1::StepOutput> reply;
  };

  static expected<std::int64_t> sleep_ms(const v1::StepRequest& req) {
    constexpr std::string_view who = "std.sleep";
    auto in = parse_object_input(who, req.input_json());
    if (!in) return std::move(in).error();
    auto ms = detail::int_field(who, *in, "ms");
    if (!ms) return std::move(ms).error();
    auto text = detail::string_field(who, *in, "duration");
    if (!text) return std::move(text).error();
    if (ms->has_value() && text->has_value())
      return validation_error("std.sleep: input: give either ms or duration, not both");
    std::int64_t out = 0;
    const char* field = "input.ms";
    if (ms->has_value()) {
      out = **ms;
    } else if (text->has_value()) {
      field = "input.duration";
      auto parsed = af::parse_duration(**text);
      if (!parsed) {
        const json got = **text;
        return detail::field_error(who, field, "a duration such as \"250ms\", \"2s\" or \"1m\"",
                                   &got);
      }
      out = std::chrono::round<std::chrono::milliseconds>(*parsed).count();
    } else {
      return validation_error("std.sleep: input.ms: required (or input.duration)");
    }
    if (out < 0)
      return validation_error("std.sleep: " + std::string{field} + ": must not be negative");
    if (out > k_max_sleep_ms)
      return validation_error("std.sleep: " + std::string{field} + ": at most "
                              + std::to_string(k_max_sleep_ms) + " ms (a week)");
    return out;
  }

  std::uint64_t last_token_ = 0;
  std::map<std::uint64_t, waiting> pending_;
};

/// std.fail: fails attempts 1..times (or every attempt with always: true) with an error of
/// `kind`, then replies {attempt: A}. Decided by StepRequest.attempt alone, so it behaves the
/// same after a restart of the agent or the node.
class fail_agent : public agent_base<fail_agent> {
public:
  static void define(handlers<fail_agent>& h) {
    h.kind("std.fail").on(&fail_agent::on_step).on(&fail_agent::on_cancel);
  }

  expected<v1::StepOutput> on_step(context&, const v1::StepRequest& req) {
    constexpr std::string_view who = "std.fail";
    auto in = parse_object_input(who, req.input_json());
    if (!in) return std::move(in).error();
    auto times = detail::int_field(who, *in, "times");
    if (!times) return std::move(times).error();
    if (times->value_or(0) < 0)
      return validation_error("std.fail: input.times: must not be negative");
    auto always = detail::bool_field(who, *in, "always");
    if (!always) return std::move(always).error();
    auto kind = detail::string_field(who, *in, "kind");
    if (!kind) return std::move(kind).error();
    errc code = errc::transient;
    if (kind->has_value() && !from_string(**kind, code)) {
      const json got = **kind;
      return detail::field_error(who, "input.kind",
                                 "one of validation, not_found, unauthorized, forbidden, quota, "
                                 "timeout, transient, conflict, internal",
                                 &got);
    }
    auto message = detail::string_field(who, *in, "message");
    if (!message) return std::move(message).error();

    const std::int64_t attempt = std::max<std::uint32_t>(req.attempt(), 1);
    // Neither field: fail every attempt (that is what the agent is for).
    const bool fail_always = always->value_or(!times->has_value());
    const bool fails = fail_always || attempt <= times->value_or(0);
    if (!fails) return make_output(json{{"attempt", attempt}});
    if (message->has_value()) return error{code, **message};
    const std::string n = std::to_string(attempt);
    return error{code, fail_always ? "std.fail: attempt " + n + " fails (always)"
                                   : "std.fail: attempt " + n + " of "
                                         + std::to_string(times->value_or(0)) + " fails"};
  }
  void on_cancel(context&, const v1::StepCancel&) {}
};

/// std.counter: an in-memory counter per input.name (default "default"), incremented by
/// input.by (default 1); replies {name, count}. Lost when the agent restarts.
class counter_agent : public agent_base<counter_agent> {
public:
  static void define(handlers<counter_agent>& h) {
    h.kind("std.counter").on(&counter_agent::on_step).on(&counter_agent::on_cancel);
  }

  expected<v1::StepOutput> on_step(context&, const v1::StepRequest& req) {
    constexpr std::string_view who = "std.counter";
    auto in = parse_object_input(who, req.input_json());
    if (!in) return std::move(in).error();
    auto name = detail::string_field(who, *in, "name");
    if (!name) return std::move(name).error();
    auto by = detail::int_field(who, *in, "by");
    if (!by) return std::move(by).error();
    const std::string key = name->value_or("default");
    std::int64_t& count = counts_[key];
    std::int64_t next = 0;
    if (__builtin_add_overflow(count, by->value_or(1), &next))
      return validation_error("std.counter: input.by: counter '" + key + "' would overflow");
    count = next;
    return make_output(json{{"name", key}, {"count", count}});
  }
  void on_cancel(context&, const v1::StepCancel&) {}

private:
  std::map<std::string, std::int64_t, std::less<>> counts_;
};

} // namespace

status add_std_agents(agent_types& types, const std_agent_options& opts) {
  struct entry {
    const char* name;
    std::function<std::unique_ptr<agent>()> factory;
    const char* description;
  };
  const entry all[] = {
      {"std.echo", sup::agent_factory<echo_agent>(), "replies with its input"},
      {"std.sleep", sup::agent_factory<sleep_agent>(),
       "replies {slept_ms} after input.ms (or input.duration) of node time"},
      {"std.fail", sup::agent_factory<fail_agent>(),
       "fails attempts 1..input.times (or always) with input.kind, then replies {attempt}"},
      {"std.counter", sup::agent_factory<counter_agent>(),
       "adds input.by to the in-memory counter input.name; replies {name, count}"},
  };
  for (const auto& e : all) {
    agent_type t;
    t.factory = e.factory;
    t.description = e.description;
    if (auto ok = types.add(e.name, std::move(t)); !ok) return ok;
  }
  if (opts.ledger_url.empty()) return {};
  auto ledger = detail::ledger_agent_type(opts.ledger_url);
  if (!ledger) return std::move(ledger).error();
  return types.add("std.ledger", std::move(*ledger));
}

} // namespace af::plan
