// sigmoid for the CPU activations (GELU, SwiGLU; their math is ops/activation_math.h),
// vectorisable like softmax_math.h.
//
// sigmoid(z) = 1 / (1 + e^-z) is evaluated through e = e^-|z| <= 1 only, so the one exp
// needed is exp_nonpositive (softmax_math.h), which the compiler vectorises where std::exp
// is a scalar call (~7 ms per 1M elements, more than the GEMMs around it):
//   sigmoid(|z|) = 1 / (1 + e),   sigmoid(-|z|) = e / (1 + e),
// and the sign of z picks one. Both keep their relative accuracy in the tails (no
// 1 - small cancellation). The branches are bit operations on the float patterns rather
// than float compares, which GCC would not vectorise under its default -ftrapping-math.
#pragma once
#include <cstdint>
#include <cstring>

#include "ops/cpu/softmax_math.h"

namespace ringloom::cpu {

inline float sigmoid(float z) {
  uint32_t zb;
  std::memcpy(&zb, &z, sizeof(zb));
  const uint32_t neg = 0u - (zb >> 31);  // all ones when z < 0 (or -0, -NaN)
  const uint32_t ab = zb | 0x80000000u;  // -|z|; a NaN stays a NaN
  float a;
  std::memcpy(&a, &ab, sizeof(a));
  const float e = exp_nonpositive(a);
  const float p = 1.0f / (1.0f + e);  // sigmoid(|z|)
  const float q = e * p;              // sigmoid(-|z|)
  uint32_t pb, qb;
  std::memcpy(&pb, &p, sizeof(pb));
  std::memcpy(&qb, &q, sizeof(qb));
  // exp_nonpositive stops at e^-87; below that the true sigmoid(-|z|) is < 1.7e-38, so it
  // is flushed to exactly 0 (the limit the callers' tails rely on). -|z| < -87 as bits:
  // above 0xC2AE0000 and at most -inf (0xFF800000); NaNs lie beyond and are kept.
  const uint32_t tiny = (ab > 0xC2AE0000u && ab <= 0xFF800000u) ? 0xFFFFFFFFu : 0u;
  const uint32_t rb = (pb & ~neg) | (qb & neg & ~tiny);
  float r;
  std::memcpy(&r, &rb, sizeof(r));
  return r;
}

// sigmoid as the functor ops/activation_math.h takes.
struct Sigmoid {
  float operator()(float z) const { return sigmoid(z); }
};

}  // namespace ringloom::cpu
