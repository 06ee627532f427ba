// Private: the node's name registry (name -> live agent). Read-mostly, so a shared mutex.
#pragma once

#include "af/error.hpp"

#include <caf/actor_control_block.hpp>

#include <cstddef>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace af::detail {

class name_registry {
public:
  struct entry {
    caf::strong_actor_ptr ptr; // null while a spawn is in progress
    std::string kind;
  };

  /// Reserves `name` for an agent being spawned; conflict when taken.
  [[nodiscard]] status reserve(const std::string& name, std::string kind);
  /// Completes a reservation.
  void bind(const std::string& name, caf::strong_actor_ptr ptr);
  /// Removes `name` if it is still bound to `ptr`.
  void erase(const std::string& name, const caf::actor_control_block* ptr);
  /// Drops a reservation whose spawn did not happen.
  void cancel(const std::string& name);
  /// The kind recorded for `name`, or "" when unknown.
  [[nodiscard]] std::string kind_of(std::string_view name) const;
  /// Entries whose kind is not `kind`.
  [[nodiscard]] std::size_t count_except(std::string_view name_prefix, std::string_view kind) const;
  [[nodiscard]] caf::strong_actor_ptr find(std::string_view name) const;
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::vector<std::pair<std::string, caf::strong_actor_ptr>> snapshot() const;

private:
  struct hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  mutable std::shared_mutex mtx_;
  std::unordered_map<std::string, entry, hash, std::equal_to<>> map_;
};

} // namespace af::detail
