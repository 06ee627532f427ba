// The cluster transport's credentials (transport_auth.hpp): secret file, nonces, HMAC proofs and
// the TLS file check.
#include "transport_auth.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

namespace af::detail {

namespace {
constexpr std::size_t k_min_secret_bytes = 16;

std::string openssl_errors() {
  std::string out;
  while (auto e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

void append_field(std::string& out, std::string_view field) {
  const auto n = static_cast<std::uint32_t>(field.size());
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out.append(field);
}
} // namespace

expected<std::string> read_cluster_secret(const std::string& path) {
  if (path.empty())
    return validation_error("cluster.secret_file: a cluster secret is required when "
                            "cluster.listen is set (a file holding at least 16 bytes)");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return validation_error("cluster.secret_file: cannot read '" + path
                            + "': " + std::strerror(errno));
  std::string s{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) return validation_error("cluster.secret_file: error reading '" + path + "'");
  while (!s.empty()
         && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  if (s.empty()) return validation_error("cluster.secret_file: '" + path + "' is empty");
  if (s.size() < k_min_secret_bytes)
    return validation_error("cluster.secret_file: '" + path + "' holds " + std::to_string(s.size())
                            + " bytes; at least " + std::to_string(k_min_secret_bytes)
                            + " are required");
  return s;
}

expected<std::string> make_nonce() {
  std::string n(k_nonce_bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1)
    return error{errc::internal, "RAND_bytes failed: " + openssl_errors()};
  return n;
}

namespace {

/// HMAC-SHA256 of `msg` under `key`; empty when OpenSSL fails (an empty MAC never verifies:
/// proofs_equal refuses empty input).
std::string hmac_sha256(std::string_view key, std::string_view msg) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len)
      == nullptr)
    return {};
  return std::string(reinterpret_cast<const char*>(out), len);
}

/// HMAC under the secret of `label` and the handshake's transcript (both names, both nonces).
std::string transcript_mac(std::string_view secret, std::string_view label,
                           std::string_view client_node, std::string_view server_node,
                           std::string_view client_nonce, std::string_view server_nonce) {
  std::string msg;
  for (auto field : {label, client_node, server_node, client_nonce, server_nonce})
    append_field(msg, field);
  return hmac_sha256(secret, msg);
}

} // namespace

std::string handshake_proof(std::string_view secret, proof_role role, std::string_view client_node,
                            std::string_view server_node, std::string_view client_nonce,
                            std::string_view server_nonce) {
  return transcript_mac(
      secret, role == proof_role::server ? "af.transport.v1/server" : "af.transport.v1/client",
      client_node, server_node, client_nonce, server_nonce);
}

std::string session_key(std::string_view secret, std::string_view client_node,
                        std::string_view server_node, std::string_view client_nonce,
                        std::string_view server_nonce) {
  return transcript_mac(secret, "af.transport.v1/session", client_node, server_node, client_nonce,
                        server_nonce);
}

std::string frame_mac(std::string_view key, char direction, std::uint64_t seq,
                      std::string_view body) {
  // Streamed: the frame body (up to a few hundred KiB) is not copied behind its 9-byte prefix.
  // The MAC algorithm is fetched once per thread; the context is re-keyed for every frame.
  struct mac_ctx {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    EVP_MAC_CTX* ctx = mac != nullptr ? EVP_MAC_CTX_new(mac) : nullptr;
    ~mac_ctx() {
      EVP_MAC_CTX_free(ctx);
      EVP_MAC_free(mac);
    }
  };
  thread_local mac_ctx m;
  if (m.ctx == nullptr) return {};
  unsigned char prefix[9];
  prefix[0] = static_cast<unsigned char>(direction);
  for (int i = 0; i < 8; ++i)
    prefix[1 + i] = static_cast<unsigned char>((seq >> (8 * i)) & 0xff);
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end()};
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  if (EVP_MAC_init(m.ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params)
          != 1
      || EVP_MAC_update(m.ctx, prefix, sizeof prefix) != 1
      || EVP_MAC_update(m.ctx, reinterpret_cast<const unsigned char*>(body.data()), body.size())
             != 1
      || EVP_MAC_final(m.ctx, out, &len, sizeof out) != 1)
    return {};
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool proofs_equal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && !a.empty() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

status check_tls_files(const std::string& cert, const std::string& key, const std::string& ca) {
  const int set = static_cast<int>(!cert.empty()) + static_cast<int>(!key.empty())
                  + static_cast<int>(!ca.empty());
  if (set == 0) return {};
  if (set != 3)
    return validation_error("cluster TLS needs all three of cluster.tls_cert, cluster.tls_key and "
                            "cluster.tls_ca (--tls-cert, --tls-key, --tls-ca), or none");
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_method()), &SSL_CTX_free};
  if (!ctx) return error{errc::internal, "cannot create an OpenSSL context: " + openssl_errors()};
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1)
    return validation_error("cluster.tls_cert: cannot load certificate '" + cert
                            + "': " + openssl_errors());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
    return validation_error("cluster.tls_key: cannot load private key '" + key
                            + "': " + openssl_errors());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return validation_error("cluster.tls_key: '" + key + "' does not match certificate '" + cert
                            + "'");
  if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1)
    return validation_error("cluster.tls_ca: cannot load CA certificates '" + ca
                            + "': " + openssl_errors());
  return {};
}

} // namespace af::detail
