#include "registry.hpp"

#include <mutex>

namespace af::detail {

status name_registry::reserve(const std::string& name, std::string kind) {
  std::unique_lock guard{mtx_};
  auto [it, inserted] = map_.try_emplace(name, entry{nullptr, std::move(kind)});
  if (!inserted)
    return error{errc::conflict, "agent name '" + name + "' is already registered (kind '"
                                     + it->second.kind + "')"};
  return {};
}

void name_registry::bind(const std::string& name, caf::strong_actor_ptr ptr) {
  std::unique_lock guard{mtx_};
  auto it = map_.find(name);
  if (it != map_.end()) it->second.ptr = std::move(ptr);
}

void name_registry::erase(const std::string& name, const caf::actor_control_block* ptr) {
  std::unique_lock guard{mtx_};
  auto it = map_.find(name);
  if (it != map_.end() && it->second.ptr.get() == ptr) map_.erase(it);
}

void name_registry::cancel(const std::string& name) {
  std::unique_lock guard{mtx_};
  auto it = map_.find(name);
  if (it != map_.end() && it->second.ptr == nullptr) map_.erase(it);
}

std::string name_registry::kind_of(std::string_view name) const {
  std::shared_lock guard{mtx_};
  auto it = map_.find(name);
  return it == map_.end() ? std::string{} : it->second.kind;
}

std::size_t name_registry::count_except(std::string_view name_prefix, std::string_view kind) const {
  std::shared_lock guard{mtx_};
  std::size_t n = 0;
  for (const auto& [k, v] : map_)
    if (v.ptr && !k.starts_with(name_prefix) && v.kind != kind) ++n;
  return n;
}

caf::strong_actor_ptr name_registry::find(std::string_view name) const {
  std::shared_lock guard{mtx_};
  auto it = map_.find(name);
  return it == map_.end() ? nullptr : it->second.ptr;
}

std::size_t name_registry::size() const {
  std::shared_lock guard{mtx_};
  return map_.size();
}

std::vector<std::pair<std::string, caf::strong_actor_ptr>> name_registry::snapshot() const {
  std::shared_lock guard{mtx_};
  std::vector<std::pair<std::string, caf::strong_actor_ptr>> out;
  out.reserve(map_.size());
  for (const auto& [k, v] : map_)
    if (v.ptr) out.emplace_back(k, v.ptr);
  return out;
}

} // namespace af::detail
