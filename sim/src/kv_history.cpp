// The clients' history in JSON lines (af/sim/kv_history.hpp): writing one record, and reading a
// file back with every field checked, so a checker never judges a malformed history.
#include "af/sim/kv_history.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <sstream>

namespace af::sim {

std::string_view to_string(kv_op_kind k) noexcept {
  switch (k) {
  case kv_op_kind::put:
    return "put";
  case kv_op_kind::get:
    return "get";
  case kv_op_kind::cas:
    return "cas";
  }
  return "?";
}

std::string to_json_line(const kv_op& op) {
  // ordered_json keeps the documented field order, which makes files easy to read by eye.
  nlohmann::ordered_json j;
  j["client"] = op.client;
  j["op"] = to_string(op.op);
  j["key"] = op.key;
  j["value"] = op.value;
  if (op.op == kv_op_kind::cas) {
    j["expected"] = op.expected;
    if (op.ret) j["ok"] = op.ok;
  }
  j["call"] = op.call;
  if (op.ret) j["return"] = *op.ret;
  return j.dump();
}

namespace {

using nlohmann::json;

expected<kv_op> parse_line(const std::string& line, const std::string& where) {
  auto j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return validation_error(where + ": expected a JSON object");
  for (const auto& [k, v] : j.items())
    if (k != "client" && k != "op" && k != "key" && k != "value" && k != "expected" && k != "ok"
        && k != "call" && k != "return")
      return validation_error(where + ": unknown field '" + k + "'");
  auto need = [&](const char* field) -> const json* {
    auto it = j.find(field);
    return it == j.end() ? nullptr : &*it;
  };
  kv_op op;
  const auto* client = need("client");
  if (client == nullptr || !client->is_number_integer() || client->get<std::int64_t>() < 0
      || client->get<std::int64_t>() > 0xffffffffLL)
    return validation_error(where + ": client: expected a non-negative integer");
  op.client = client->get<std::uint32_t>();
  const auto* kind = need("op");
  if (kind == nullptr || !kind->is_string())
    return validation_error(where + ": op: expected \"put\", \"get\" or \"cas\"");
  const auto k = kind->get<std::string>();
  if (k == "put")
    op.op = kv_op_kind::put;
  else if (k == "get")
    op.op = kv_op_kind::get;
  else if (k == "cas")
    op.op = kv_op_kind::cas;
  else
    return validation_error(where + ": op: expected \"put\", \"get\" or \"cas\", got \"" + k
                            + "\"");
  for (const char* field : {"key", "value"}) {
    const auto* v = need(field);
    if (v == nullptr || !v->is_string())
      return validation_error(where + ": " + field + ": expected a string");
  }
  op.key = j["key"].get<std::string>();
  op.value = j["value"].get<std::string>();
  const auto* call = need("call");
  if (call == nullptr || !call->is_number_integer())
    return validation_error(where + ": call: expected an integer (virtual nanoseconds)");
  op.call = call->get<std::int64_t>();
  if (const auto* ret = need("return")) {
    if (!ret->is_number_integer())
      return validation_error(where + ": return: expected an integer (virtual nanoseconds)");
    op.ret = ret->get<std::int64_t>();
    if (*op.ret < op.call)
      return validation_error(where + ": return " + std::to_string(*op.ret) + " is before call "
                              + std::to_string(op.call));
  }
  const auto* expected_v = need("expected");
  const auto* ok = need("ok");
  if (op.op == kv_op_kind::cas) {
    if (expected_v == nullptr || !expected_v->is_string())
      return validation_error(where + ": expected: a cas needs the expected value (a string)");
    op.expected = expected_v->get<std::string>();
    if (op.ret) {
      if (ok == nullptr || !ok->is_boolean())
        return validation_error(where + ": ok: a cas that returned needs ok (true or false)");
      op.ok = ok->get<bool>();
    } else if (ok != nullptr) {
      return validation_error(where + ": ok: a cas without return has an unknown outcome");
    }
  } else if (expected_v != nullptr || ok != nullptr) {
    return validation_error(where + ": expected and ok belong to cas operations only");
  }
  return op;
}

} // namespace

expected<std::vector<kv_op>> read_history(std::istream& in, const std::string& label) {
  std::vector<kv_op> out;
  std::vector<std::size_t> lines;
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto op = parse_line(line, label + ":" + std::to_string(n));
    if (!op) return op.error();
    out.push_back(std::move(*op));
    lines.push_back(n);
  }
  if (in.bad()) return validation_error(label + ": read error");
  // Each client is sequential: an operation starts after its previous known one returned.
  std::map<std::uint32_t, std::vector<std::size_t>> by_client;
  for (std::size_t i = 0; i < out.size(); ++i)
    by_client[out[i].client].push_back(i);
  for (auto& [client, idx] : by_client) {
    std::stable_sort(idx.begin(), idx.end(),
                     [&](std::size_t a, std::size_t b) { return out[a].call < out[b].call; });
    for (std::size_t k = 1; k < idx.size(); ++k) {
      const auto& prev = out[idx[k - 1]];
      const auto& cur = out[idx[k]];
      if (prev.ret && cur.call < *prev.ret)
        return validation_error(label + ":" + std::to_string(lines[idx[k]]) + ": client "
                                + std::to_string(client) + " called at " + std::to_string(cur.call)
                                + " before its operation of line "
                                + std::to_string(lines[idx[k - 1]]) + " returned at "
                                + std::to_string(*prev.ret) + " (clients are sequential)");
    }
  }
  return out;
}

expected<std::vector<kv_op>> parse_history(std::string_view text, const std::string& label) {
  std::istringstream in{std::string{text}};
  return read_history(in, label);
}

} // namespace af::sim
