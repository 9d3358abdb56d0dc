// Size arithmetic that cannot wrap. Every product of dimensions, element counts and byte
// counts goes through checked_mul: a product past 2^63-1 that wrapped would allocate a
// small block and let a kernel read or write far beyond it, so it throws instead.
#pragma once
#include <cstdint>
#include <limits>

#include "core/error.h"

namespace ringloom {

// a * b for a, b >= 0; throws ValueError "<what>: a x b overflows 64-bit sizes".
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  RL_CHECK(a >= 0 && b >= 0, Value, what, ": negative size in ", a, " x ", b);
  RL_CHECK(a == 0 || b <= std::numeric_limits<int64_t>::max() / a, Value, what, ": size ", a, " x ", b,
           " overflows 64-bit sizes");
  return a * b;
}

// a + b for a, b >= 0, with the same guarantee.
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  RL_CHECK(a >= 0 && b >= 0, Value, what, ": negative size in ", a, " + ", b);
  RL_CHECK(b <= std::numeric_limits<int64_t>::max() - a, Value, what, ": size ", a, " + ", b,
           " overflows 64-bit sizes");
  return a + b;
}

}  // namespace ringloom
