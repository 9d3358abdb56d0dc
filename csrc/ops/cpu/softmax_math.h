// Row primitives of softmax and cross-entropy on the CPU, written so that the compiler
// vectorises them without -ffast-math: the row max, exp(x - shift), and sums.
//
// exp: softmax and cross-entropy only ever exponentiate "value minus its row max" (or
// minus the log-sum-exp), so the argument is never (meaningfully) positive. std::exp is a
// scalar library call the compiler cannot vectorise, and it dominated the attention
// forward. Method (Cody & Waite, as in Cephes' expf): write x = n ln2 + r with n an integer
// and |r| <= ln2/2, so e^x = 2^n e^r. ln2 is split into a high part with few bits and a
// small correction, so n*ln2_hi is exact and r keeps its precision. e^r is a degree-7
// polynomial 1 + r + r^2/2 + ... with coefficients fitted on [-ln2/2, ln2/2]; 2^n is built
// directly as the float's exponent bits. Error: about 1 ulp on [-87, 0]; below -87 (-inf
// too) the result is that of -87, under 1.7e-38; NaN gives NaN.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ringloom::cpu {

// e^x for x <= 0 (see the top of the file).
inline float exp_nonpositive(float x) {
  // Clamp x to >= -87 on its bits: for x <= 0 the float order is the reverse of the
  // unsigned order of the bit patterns (+0 is 0, -0 is 0x80000000, -87 is 0xC2AE0000, -inf
  // is 0xFF800000), so the clamp is an unsigned min. Above -inf lie the NaNs with the sign
  // bit set; OR-ing a NaN's own bits back in keeps it a NaN, since a NaN logit has to show
  // in the loss. (A float compare-and-select would keep GCC from vectorising under its
  // default -ftrapping-math; integer min/and/or do not.)
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  const uint32_t nan_mask = (u << 1) > 0xFF000000u ? 0xFFFFFFFFu : 0u;
  u = (u < 0xC2AE0000u ? u : 0xC2AE0000u) | (u & nan_mask);
  std::memcpy(&x, &u, sizeof(x));
  // round(x / ln2): adding 1.5 * 2^23 pushes the fraction bits out of the float (round to
  // nearest in the default mode); unlike std::floor this keeps the loop vectorisable.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;   // x - n ln2, ln2 = hi - lo
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

// max_j x[j] over j < n (n >= 1), in four lanes so the compare chain is not one long
// dependency. Like std::max it skips NaNs that are not first in their lane.
inline float row_max(const float* x, int64_t n) {
  float m[4] = {x[0], x[0], x[0], x[0]};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int k = 0; k < 4; ++k) m[k] = x[j + k] > m[k] ? x[j + k] : m[k];
  for (; j < n; ++j) m[0] = x[j] > m[0] ? x[j] : m[0];
  const float a = m[0] > m[1] ? m[0] : m[1], b = m[2] > m[3] ? m[2] : m[3];
  return a > b ? a : b;
}

// out[j] = exp(x[j] - shift) for j < n, every x[j] <= shift; out may be x.
inline void exp_shifted(const float* x, float* out, int64_t n, float shift) {
  for (int64_t j = 0; j < n; ++j) out[j] = exp_nonpositive(x[j] - shift);
}

// The sums below keep four double accumulators: double precision over long rows (a 50k
// vocabulary), and independent lanes that the compiler can vectorise across.

// sum_j x[j] over j < n.
inline double sum_double(const float* x, int64_t n) {
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int k = 0; k < 4; ++k) acc[k] += double(x[j + k]);
  for (; j < n; ++j) acc[0] += double(x[j]);
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// sum_j exp(x[j] - shift) over j < n, every x[j] <= shift, without storing the terms.
inline double sum_exp_shifted(const float* x, int64_t n, float shift) {
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int k = 0; k < 4; ++k) acc[k] += double(exp_nonpositive(x[j + k] - shift));
  for (; j < n; ++j) acc[0] += double(exp_nonpositive(x[j] - shift));
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

}  // namespace ringloom::cpu
