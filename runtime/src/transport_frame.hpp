// Private: the bytes two cluster transports exchange as one frame (on the wire: a little-endian
// u32 length, then these bytes): a type byte, then a handshake message (transport.proto), a
// goodbye, or a batch of envelopes in a compact binary form.
#pragma once

#include "af/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace af::detail {

/// The first byte of a frame.
enum class frame_type : std::uint8_t {
  hello = 'H',
  challenge = 'C',
  proof = 'P',
  welcome = 'W',
  refused = 'R',
  goodbye = 'G', ///< the sender is shutting down cleanly; its close follows
  batch = 'B',
};

/// What one batch item carries.
enum class item_kind : std::uint8_t {
  tell = 1,  ///< an envelope, no reply expected
  ask = 2,   ///< an envelope; `ask_id` names the reply
  reply = 3, ///< the reply envelope to ask `ask_id`
  fail = 4,  ///< ask `ask_id` failed: body is "<error kind>\n<message>"
};

struct batch_item {
  item_kind kind = item_kind::tell;
  std::uint64_t ask_id = 0;
  std::string_view body; ///< envelope wire bytes (af.v1.Envelope), or the failure text
};

/// Bytes one item takes in a batch: kind (1), ask id (8), body length (4), body.
inline constexpr std::size_t k_item_overhead = 13;

/// Starts a frame of type `t` in `out` (cleared first).
void begin_frame(std::string& out, frame_type t);
/// Appends one item to a batch frame.
void append_item(std::string& out, item_kind k, std::uint64_t ask_id, std::string_view body);
/// The items of a batch frame's body (the frame without its type byte); views into `body`.
/// A validation error names what is malformed.
[[nodiscard]] expected<std::vector<batch_item>> parse_batch(std::string_view body);
/// The same into `items` (cleared first; on an error it holds the items before the bad one):
/// a receiver reuses one vector for every frame instead of allocating the list per frame (a
/// batch of 64 items is a 2 KiB block, a size whose allocation makes glibc consolidate its
/// fastbins each time).
[[nodiscard]] status parse_batch(std::string_view body, std::vector<batch_item>& items);

} // namespace af::detail
