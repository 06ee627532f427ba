// Private: the cluster transport's credentials: the shared secret, handshake nonces and proofs
// (HMAC-SHA256), and an early check of the TLS files (CAF's OpenSSL module would otherwise only
// find a bad file when the first connection is made, on its I/O thread).
#pragma once

#include "af/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace af::detail {

/// Bytes of a handshake nonce.
inline constexpr std::size_t k_nonce_bytes = 32;

/// Reads the cluster secret from `path` (trailing whitespace and newlines are not part of it).
/// Errors name the file: missing, unreadable, empty, or shorter than 16 bytes.
[[nodiscard]] expected<std::string> read_cluster_secret(const std::string& path);

/// `k_nonce_bytes` from OpenSSL's CSPRNG (RAND_bytes); internal error if it fails.
[[nodiscard]] expected<std::string> make_nonce();

/// Which side of the handshake a proof is from: each side's proof is bound to its role, both node
/// names and both nonces, so it cannot be replayed in another session or reflected back.
enum class proof_role { server, client };

/// HMAC-SHA256(secret, role | client node | server node | client nonce | server nonce), every
/// field length-prefixed.
[[nodiscard]] std::string handshake_proof(std::string_view secret, proof_role role,
                                          std::string_view client_node,
                                          std::string_view server_node,
                                          std::string_view client_nonce,
                                          std::string_view server_nonce);

/// The key of one authenticated session: HMAC-SHA256(secret, "session" | client node | server node
/// | client nonce | server nonce). Both sides derive it after the handshake; it never travels.
[[nodiscard]] std::string session_key(std::string_view secret, std::string_view client_node,
                                      std::string_view server_node, std::string_view client_nonce,
                                      std::string_view server_nonce);

/// Bytes of a frame MAC.
inline constexpr std::size_t k_mac_bytes = 32;

/// The MAC of one batch frame: HMAC-SHA256(session key, direction | sequence number | body).
/// `direction` is 'c' for frames the dialling side sends, 's' for the other way, so a frame
/// cannot be reflected; the sequence number makes a replayed frame fail.
[[nodiscard]] std::string frame_mac(std::string_view key, char direction, std::uint64_t seq,
                                    std::string_view body);

/// Constant-time comparison of two proofs.
[[nodiscard]] bool proofs_equal(std::string_view a, std::string_view b) noexcept;

/// Loads certificate chain, key (and checks they match) and CA file with OpenSSL; the error names
/// the file at fault.
[[nodiscard]] status check_tls_files(const std::string& cert, const std::string& key,
                                     const std::string& ca);

} // namespace af::detail
