// The scalar math of QSGD (ops/qsgd.h), one definition for the CPU loops (ops/cpu/qsgd.cpp)
// and the CUDA kernels (ops/cuda/qsgd.cu): the generator, the norm's rounding, an element's
// code, one byte of the packed codes, and the decoded value. Every step is an IEEE
// operation with one rounding (float64 +, *, /, sqrt, floor; float32 conversions), which
// both devices compute the same way, so CPU and GPU agree bit for bit.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#ifdef __CUDACC__
#define RL_QSGD_FN __host__ __device__ __forceinline__
// packed_byte is instantiated with a __device__-only code functor in CUDA code and a host one
// in CPU code; each instantiation is only ever called on its own side.
#define RL_QSGD_SIDES _Pragma("nv_exec_check_disable")
#else
#define RL_QSGD_FN inline
#define RL_QSGD_SIDES
#endif

namespace ringloom::qsgd {

constexpr int kLanes = 32;  // the norm's strided partial sums: one per lane of a warp

// ---- the generator ----
// splitmix64 (Steele, Lea, Flood 2014, "Fast splittable pseudorandom number generators"):
// the state advances by the golden-ratio increment and each output is the state through
// the finaliser mix64 (Stafford's "Mix13" constants).
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

RL_QSGD_FN uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The generator's state for one (seed, step, key, rank): each value is xor-ed into the state
// and mixed, h = mix64((h ^ x) + kGolden), starting from h = 0, in the order seed, step,
// key, rank. Computed once per call on the host.
inline uint64_t stream_of(uint64_t seed, uint64_t step, uint64_t key, uint64_t rank) {
  uint64_t h = 0;
  for (uint64_t x : {seed, step, key, rank}) h = mix64((h ^ x) + kGolden);
  return h;
}

// u_i in [0, 1): output i of splitmix64 started at `stream` (mix64(stream + (i + 1) kGolden),
// wrapping), its top 53 bits times 2^-53: every value exact in float64.
RL_QSGD_FN double uniform(uint64_t stream, int64_t i) {
  const uint64_t bits = mix64(stream + (uint64_t(i) + 1) * kGolden);
  return double(bits >> 11) * 0x1.0p-53;
}

// ---- encoding ----
// The fp32 norm sent for a bucket whose sum of squares (in the documented order) is sumsq:
// sqrt rounded to nearest, then up one ulp if that is below the float64 norm; NaN when the
// result is not finite.
RL_QSGD_FN float norm_of(double sumsq) {
  const double norm = std::sqrt(sumsq);
  float n32 = float(norm);
  if (double(n32) < norm) n32 = std::nextafter(n32, INFINITY);
  return std::isfinite(n32) ? n32 : NAN;
}

// The code of element x of a bucket with fp32 norm `norm`: sgn(x) xi + s, xi = floor(r) +
// [u < r - floor(r)], r = s |x| / norm (r <= s since norm >= |x|). Level 0 (code s) for a
// NaN norm and for norm 0 (then every x of the bucket is 0).
RL_QSGD_FN uint32_t code_of(float x, float norm, int64_t levels, double u) {
  const uint32_t s = uint32_t(levels);
  if (!(norm > 0.0f)) return s;
  const double r = (double(levels) * std::fabs(double(x))) / double(norm);
  const double lo = std::floor(r);
  const uint32_t xi = uint32_t(lo) + (u < r - lo ? 1u : 0u);
  return x > 0.0f ? s + xi : x < 0.0f ? s - xi : s;
}

// ---- packing ----
// Byte j of the packed codes: stream bits [8 j, 8 j + 8), which belong to codes
// floor(8 j / bits) .. floor((8 j + 7) / bits) (those < n). code(e) gives code e.
RL_QSGD_SIDES
template <class Code>
RL_QSGD_FN uint8_t packed_byte(int64_t j, int64_t n, int64_t bits, Code code) {
  const int64_t first = 8 * j / bits;
  int64_t last = (8 * j + 7) / bits;
  if (last > n - 1) last = n - 1;
  uint32_t byte = 0;
  for (int64_t e = first; e <= last; ++e) {
    const int64_t shift = e * bits - 8 * j;  // where code e starts, relative to the byte's bit 0
    const uint32_t c = code(e);
    byte |= shift >= 0 ? c << shift : c >> -shift;
  }
  return uint8_t(byte & 0xFFu);
}

// ---- decoding ----
// Code i of a packed code section of `nbytes` bytes.
RL_QSGD_FN uint32_t unpack_code(const uint8_t* codes, int64_t nbytes, int64_t i, int64_t bits) {
  const int64_t bit = i * bits, at = bit >> 3;
  uint32_t w = 0;
  for (int k = 0; k < 3 && at + k < nbytes; ++k) w |= uint32_t(codes[at + k]) << (8 * k);  // bits <= 16
  return (w >> (bit & 7)) & ((1u << bits) - 1u);
}

// The fp32 norm stored little-endian at p (a payload need not be 4-byte aligned).
RL_QSGD_FN float load_norm(const uint8_t* p) {
  const uint32_t w = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  float f;
  memcpy(&f, &w, 4);
  return f;
}

RL_QSGD_FN float decode(uint32_t code, float norm, int64_t levels) {
  const double s = double(levels);
  return float((double(code) - s) * (double(norm) / s));
}

// The sum written out: NaN as the one quiet NaN that norm_of sends (a GPU's arithmetic
// returns its own canonical NaN bits, a CPU's the operand's), so both devices write the
// same bytes for a non-finite bucket too.
RL_QSGD_FN float canonical(float sum) { return sum != sum ? NAN : sum; }

}  // namespace ringloom::qsgd
