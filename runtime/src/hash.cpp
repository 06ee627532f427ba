#include "af/hash.hpp"

#include <openssl/evp.h>

#include <memory>
#include <stdexcept>

namespace af {

namespace {

const EVP_MD* sha256_md() {
  // Fetch once: an implicit fetch on every EVP_DigestInit costs more than hashing small inputs.
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

struct ctx_deleter {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};

} // namespace

digest sha256(std::string_view data) {
  thread_local std::unique_ptr<EVP_MD_CTX, ctx_deleter> ctx{EVP_MD_CTX_new()};
  digest out{};
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), sha256_md(), nullptr) != 1
      || EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1
      || EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size())
    throw std::runtime_error("OpenSSL SHA-256 failed"); // only on allocation failure
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t size) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = k_digits[data[i] >> 4];
    out[2 * i + 1] = k_digits[data[i] & 15];
  }
  return out;
}

} // namespace af
