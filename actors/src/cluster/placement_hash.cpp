// Rendezvous (highest-random-weight) hashing and virtual-name parsing: pure functions, the same
// on every node, so that nodes with the same membership view agree on every owner.
#include "af/cluster/placement.hpp"

#include <openssl/evp.h>

#include <algorithm>

namespace af::cluster {

namespace {
bool kind_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
         || c == '_' || c == '-';
}
} // namespace

expected<virtual_name> parse_virtual_name(std::string_view name) {
  auto slash = name.find('/');
  if (slash == std::string_view::npos)
    return validation_error("virtual agent name '" + std::string{name}
                            + "': expected Kind/id (no '/')");
  auto kind = name.substr(0, slash);
  auto id = name.substr(slash + 1);
  if (kind.empty() || kind.size() > 64 || !std::all_of(kind.begin(), kind.end(), kind_char))
    return validation_error("virtual agent name '" + std::string{name}
                            + "': kind must be 1-64 characters of [A-Za-z0-9._-]");
  if (kind.starts_with("af."))
    return validation_error("virtual agent name '" + std::string{name}
                            + "': the kind prefix 'af.' is reserved");
  if (id.empty() || id.size() > 200)
    return validation_error("virtual agent name '" + std::string{name}
                            + "': id must be 1-200 bytes");
  if (!std::all_of(id.begin(), id.end(), [](char c) { return c > ' ' && c < 0x7f; }))
    return validation_error("virtual agent name '" + std::string{name}
                            + "': id must be printable ASCII without spaces");
  return virtual_name{std::string{kind}, std::string{id}};
}

std::uint64_t placement_score(std::string_view member, std::string_view key) {
  std::string buf;
  buf.reserve(member.size() + 1 + key.size());
  buf.append(member).push_back('\0');
  buf.append(key);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(buf.data(), buf.size(), md, &len, EVP_sha256(), nullptr);
  std::uint64_t s = 0;
  for (int i = 0; i < 8; ++i)
    s = (s << 8) | md[i];
  return s;
}

std::string owner_of(std::string_view key, const std::vector<std::string>& members) {
  const std::string* best = nullptr;
  std::uint64_t best_score = 0;
  for (const auto& m : members) {
    auto s = placement_score(m, key);
    if (best == nullptr || s > best_score || (s == best_score && m < *best)) {
      best = &m;
      best_score = s;
    }
  }
  return best != nullptr ? *best : std::string{};
}

} // namespace af::cluster
