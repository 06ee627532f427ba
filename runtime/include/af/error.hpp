// af::error and af::expected<T>: the runtime's one error taxonomy (ARCHITECTURE.md invariant 6),
// returned as values; exceptions are used only at the edges (CLI, HTTP).
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace af {

/// The error taxonomy. Each kind maps to a retry policy (see `retryable`).
enum class errc : unsigned char {
  validation = 1,
  not_found,
  unauthorized,
  forbidden,
  quota,
  timeout,
  transient,
  conflict,
  internal,
};

/// Stable lower-case name of an error kind ("validation", "not_found", ...).
[[nodiscard]] std::string_view to_string(errc code) noexcept;

/// Parses a name produced by `to_string`; returns false for unknown names.
[[nodiscard]] bool from_string(std::string_view name, errc& out) noexcept;

/// Transient and timeout errors may be retried with backoff; the others may not.
[[nodiscard]] constexpr bool retryable(errc code) noexcept {
  return code == errc::transient || code == errc::timeout;
}

/// An error value: a kind plus a message that names the file, line, field or id at fault.
class error {
public:
  error(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  [[nodiscard]] errc code() const noexcept { return code_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  /// "validation: envelope.payload: 5000000 bytes exceeds the limit of 4194304"
  [[nodiscard]] std::string to_string() const;

  friend bool operator==(const error& a, const error& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

private:
  errc code_;
  std::string message_;
};

/// Shorthands: `return af::validation_error("config.node.name: must not be empty");`
[[nodiscard]] inline error make_error(errc c, std::string msg) { return {c, std::move(msg)}; }
[[nodiscard]] inline error validation_error(std::string msg) {
  return {errc::validation, std::move(msg)};
}
[[nodiscard]] inline error not_found_error(std::string msg) {
  return {errc::not_found, std::move(msg)};
}
[[nodiscard]] inline error internal_error(std::string msg) {
  return {errc::internal, std::move(msg)};
}

/// A value or an error. Small on purpose (C++20 has no std::expected).
template <class T>
class [[nodiscard]] expected {
public:
  expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  expected(af::error err) : v_(std::in_place_index<1>, std::move(err)) {}

  [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    assert(has_value());
    return std::get<0>(v_);
  }
  const T& value() const& {
    assert(has_value());
    return std::get<0>(v_);
  }
  T&& value() && {
    assert(has_value());
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  [[nodiscard]] const af::error& error() const& {
    assert(!has_value());
    return std::get<1>(v_);
  }
  [[nodiscard]] af::error&& error() && {
    assert(!has_value());
    return std::get<1>(std::move(v_));
  }

private:
  std::variant<T, af::error> v_;
};

/// expected<void>: success or an error.
template <>
class [[nodiscard]] expected<void> {
public:
  expected() = default;
  expected(af::error err) : err_(std::move(err)), ok_(false) {}

  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  [[nodiscard]] const af::error& error() const& {
    assert(!ok_);
    return err_;
  }

private:
  af::error err_{errc::internal, {}};
  bool ok_ = true;
};

using status = expected<void>;

} // namespace af
