// Frames between cluster transports (transport_frame.hpp): little-endian fixed-width integers, so
// a batch is parsed with bounds checks and no allocation per item beyond the item list.
#include "transport_frame.hpp"

namespace af::detail {

namespace {
template <class T>
void put(std::string& out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
}

template <class T>
T get(std::string_view s, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return static_cast<T>(v);
}
} // namespace

void begin_frame(std::string& out, frame_type t) {
  out.clear();
  out.push_back(static_cast<char>(t));
}

void append_item(std::string& out, item_kind k, std::uint64_t ask_id, std::string_view body) {
  out.push_back(static_cast<char>(k));
  put<std::uint64_t>(out, ask_id);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(body.size()));
  out.append(body);
}

status parse_batch(std::string_view body, std::vector<batch_item>& items) {
  items.clear();
  std::size_t at = 0;
  while (at < body.size()) {
    if (body.size() - at < k_item_overhead)
      return validation_error("batch item " + std::to_string(items.size())
                              + ": truncated header at byte " + std::to_string(at));
    const auto k = static_cast<std::uint8_t>(body[at]);
    if (k < 1 || k > 4)
      return validation_error("batch item " + std::to_string(items.size()) + ": unknown kind "
                              + std::to_string(k));
    batch_item it;
    it.kind = static_cast<item_kind>(k);
    it.ask_id = get<std::uint64_t>(body, at + 1);
    const auto len = get<std::uint32_t>(body, at + 9);
    at += k_item_overhead;
    if (len > body.size() - at)
      return validation_error("batch item " + std::to_string(items.size()) + ": body of "
                              + std::to_string(len) + " bytes runs past the frame");
    it.body = body.substr(at, len);
    at += len;
    if (it.kind != item_kind::tell && it.ask_id == 0)
      return validation_error("batch item " + std::to_string(items.size())
                              + ": an ask, reply or failure without an ask id");
    items.push_back(it);
  }
  if (items.empty()) return validation_error("empty batch");
  return {};
}

expected<std::vector<batch_item>> parse_batch(std::string_view body) {
  std::vector<batch_item> items;
  if (auto st = parse_batch(body, items); !st) return st.error();
  return items;
}

} // namespace af::detail
