// volt's one error type, and VOLT_CHECK for preconditions whose message says what to do.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace volt {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace volt

// VOLT_CHECK(cond, "what was wrong; ", value, " what to do") throws volt::Error when cond is false.
#define VOLT_CHECK(cond, ...)                                                                          \
  do {                                                                                                 \
    if (!(cond)) ::volt::detail::throw_error(__FILE__, __LINE__, ::volt::detail::concat(__VA_ARGS__)); \
  } while (false)

#define VOLT_FAIL(...) ::volt::detail::throw_error(__FILE__, __LINE__, ::volt::detail::concat(__VA_ARGS__))
