// Errors that cross into Python. Every public entry validates its inputs and throws
// ringloom::Error naming the op and the shapes, dtypes and devices involved; the bindings
// map ErrorKind to ValueError / TypeError / IndexError / RuntimeError / TimeoutError.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ringloom {

enum class ErrorKind { Value, Type, Index, Runtime, Timeout, NotImplemented };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, const Args&... args) {
  throw Error(kind, str_cat(args...));
}

}  // namespace ringloom

// RL_CHECK(cond, Kind, "op: message ", value, ...) throws ringloom::Error(ErrorKind::Kind, ...).
#define RL_CHECK(cond, kind, ...)                                  \
  do {                                                              \
    if (!(cond)) ::ringloom::fail(::ringloom::ErrorKind::kind, __VA_ARGS__); \
  } while (0)
