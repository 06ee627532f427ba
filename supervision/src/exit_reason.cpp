#include "exit_reason.hpp"

#include <caf/atom.hpp>
#include <caf/exit_reason.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace af::sup::detail {

namespace {

constexpr caf::atom_value k_fail_category = caf::atom("af_fail");
constexpr caf::atom_value k_crash_category = caf::atom("af_crash");
constexpr caf::atom_value k_escalated_category = caf::atom("af_escal");

std::string context_text(const caf::error& e) {
  const auto& ctx = e.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0)) return ctx.get_as<std::string>(0);
  return ctx.empty() ? std::string{} : to_string(ctx);
}

} // namespace

caf::error fail_reason(const af::error& e) {
  return caf::error{static_cast<std::uint8_t>(e.code()), k_fail_category,
                    caf::make_message(e.to_string())};
}

caf::error crash_reason(const std::string& what) {
  return caf::error{1, k_crash_category, caf::make_message(what)};
}

caf::error escalated_reason(const std::string& what) {
  return caf::error{1, k_escalated_category, caf::make_message(what)};
}

bool is_escalation(const caf::error& reason) {
  return reason && reason.category() == k_escalated_category;
}

exit_info classify(const caf::error& reason) {
  if (!reason) return {false, "normal", "normal"};
  const auto cat = reason.category();
  if (cat == k_fail_category) return {true, "fail", "fail: " + context_text(reason)};
  if (cat == k_crash_category) return {true, "exception", "exception: " + context_text(reason)};
  if (cat == k_escalated_category) return {true, "escalated", "escalated: " + context_text(reason)};
  if (cat == caf::atom("exit")) {
    switch (static_cast<caf::exit_reason>(reason.code())) {
    case caf::exit_reason::normal:
      return {false, "normal", "normal"};
    case caf::exit_reason::user_shutdown:
      return {false, "shutdown", "shutdown"};
    case caf::exit_reason::kill:
      return {true, "killed", "killed"};
    case caf::exit_reason::unhandled_exception:
      return {true, "exception", "exception: " + context_text(reason)};
    default:
      return {true, "abnormal", to_string(reason)};
    }
  }
  if (cat == caf::atom("system")
      && reason.code() == static_cast<std::uint8_t>(caf::sec::runtime_error))
    return {true, "exception", "exception: " + context_text(reason)};
  return {true, "abnormal", to_string(reason)};
}

} // namespace af::sup::detail
