// Errors that cross into Python. Every public entry validates its inputs and throws
// ringloom::Error naming the op and the shapes, dtypes and devices involved; the bindings
// map ErrorKind to ValueError / TypeError / IndexError / RuntimeError / TimeoutError.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>

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
// Messages are built without iostreams: on some hosts (seen on the GPU machine, where other
// libraries bring their own C++ runtime pieces into the process) formatting a number
// through std::ostream crashed inside the error path itself.
inline void append_one(std::string& s, const std::string& v) { s += v; }
inline void append_one(std::string& s, const char* v) { s += v ? v : "(null)"; }
inline void append_one(std::string& s, char v) { s += v; }
inline void append_one(std::string& s, bool v) { s += v ? "true" : "false"; }
template <typename T>
void append_one(std::string& s, const T& v) {
  if constexpr (std::is_integral_v<T>) {
    s += std::to_string(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", double(v));
    s += buf;
  } else if constexpr (std::is_enum_v<T>) {
    s += std::to_string(static_cast<long long>(v));
  } else {
    s += std::string(v);
  }
}
inline void append(std::string&) {}
template <typename T, typename... Rest>
void append(std::string& s, const T& v, const Rest&... rest) {
  append_one(s, v);
  append(s, rest...);
}
}  // namespace detail

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::string s;
  detail::append(s, args...);
  return s;
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
