#include "af/sup/spec.hpp"

#include <algorithm>
#include <unordered_set>

namespace af::sup {

std::string_view to_string(restart_policy p) noexcept {
  switch (p) {
  case restart_policy::permanent:
    return "permanent";
  case restart_policy::transient:
    return "transient";
  case restart_policy::temporary:
    break;
  }
  return "temporary";
}

std::string_view to_string(strategy s) noexcept {
  switch (s) {
  case strategy::one_for_one:
    return "one_for_one";
  case strategy::one_for_all:
    return "one_for_all";
  case strategy::rest_for_one:
    return "rest_for_one";
  case strategy::dynamic:
    break;
  }
  return "dynamic";
}

expected<restart_policy> parse_restart_policy(std::string_view name) {
  for (auto p : {restart_policy::permanent, restart_policy::transient, restart_policy::temporary})
    if (to_string(p) == name) return p;
  return validation_error("restart policy '" + std::string{name}
                          + "': expected permanent, transient or temporary");
}

expected<strategy> parse_strategy(std::string_view name) {
  for (auto s :
       {strategy::one_for_one, strategy::one_for_all, strategy::rest_for_one, strategy::dynamic})
    if (to_string(s) == name) return s;
  return validation_error("strategy '" + std::string{name}
                          + "': expected one_for_one, one_for_all, rest_for_one or dynamic");
}

duration backoff::delay(std::uint32_t consecutive, af::rng& r) const {
  if (consecutive <= 1 || base <= duration::zero() || cap <= duration::zero())
    return duration::zero();
  // base * 2^(n-2), saturating at cap without overflowing.
  duration bound = base;
  for (std::uint32_t i = 2; i < consecutive && bound < cap; ++i)
    bound = bound > cap / 2 ? cap : bound * 2;
  bound = std::min(bound, cap);
  auto ticks = static_cast<std::uint64_t>(bound.count());
  return duration{static_cast<duration::rep>(r.uniform(ticks + 1))};
}

std::string_view child_spec::type_name() const noexcept {
  if (is_supervisor()) return "supervisor";
  if (is_actor()) return "actor";
  return "agent";
}

status validate(const supervisor_spec& s) {
  if (s.name.empty()) return validation_error("supervisor name: must not be empty");
  const auto where = "supervisor '" + s.name + "': ";
  if (s.policy.limits.period <= duration::zero())
    return validation_error(where + "intensity period must be positive");
  if (s.policy.delay.base < duration::zero() || s.policy.delay.cap < duration::zero()
      || s.policy.delay.reset_after < duration::zero())
    return validation_error(where + "backoff durations must not be negative");
  std::unordered_set<std::string> ids;
  for (const auto& c : s.children) {
    if (c.id.empty()) return validation_error(where + "a child has an empty id");
    if (!ids.insert(c.id).second)
      return validation_error(where + "child id '" + c.id + "' is used twice");
    int ways = (c.is_agent() ? 1 : 0) + (c.is_supervisor() ? 1 : 0) + (c.is_actor() ? 1 : 0);
    if (ways != 1)
      return validation_error(where + "child '" + c.id
                              + "' must have exactly one of make_agent, sup, make_actor");
    if (c.shutdown < duration::zero())
      return validation_error(where + "child '" + c.id + "' has a negative shutdown timeout");
    if (c.is_supervisor())
      if (auto v = validate(*c.sup); !v) return v;
  }
  if (s.policy.how == strategy::dynamic && !s.children.empty())
    return validation_error(where
                            + "a dynamic supervisor starts with no children (use "
                              "start_child)");
  return {};
}

child_spec supervisor_child(supervisor_spec s) {
  child_spec c;
  c.id = s.name;
  c.shutdown = infinity;
  c.sup = std::make_shared<const supervisor_spec>(std::move(s));
  return c;
}

child_spec actor_child(std::string id, std::function<expected<caf::actor>(caf::actor_system&)> f,
                       std::string kind) {
  child_spec c;
  c.id = std::move(id);
  c.make_actor = std::move(f);
  c.actor_kind = std::move(kind);
  return c;
}

} // namespace af::sup
