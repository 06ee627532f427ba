// Private: what audit_chain.cpp shares with audit_verify.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace af::store::detail {

/// The seq inside a canonical record without parsing all of it (nullopt: none found).
[[nodiscard]] std::optional<std::uint64_t> embedded_seq(std::string_view rec);

} // namespace af::store::detail
