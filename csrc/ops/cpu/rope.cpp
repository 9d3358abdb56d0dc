// CPU rotary position embedding, rotate-half layout; the math is in ops/rope.h.
//
// The cos/sin table is built once per call for the T positions in use. The angle
// t * base^(-2i/D) is formed in double: in fp32, at t ~ 1e4..1e5 the angle's rounding
// error (~t * 6e-8 radians) alone would already exceed fp32 tolerance on cos and sin.
// Only the table entries are rounded to fp32. The rotation itself is in place, each
// (b, t) row independently, so rows run in parallel.
#include "ops/rope.h"

#include <cmath>
#include <vector>

namespace ringloom::cpu {

namespace {
constexpr int64_t kParallelMin = 1 << 14;  // elements; smaller problems stay on one thread
}  // namespace

void rope_apply(Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset, bool inverse) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  if (B * T == 0 || n_rot_heads == 0 || half == 0) return;

  // cos/sin[t][i] for absolute position pos_offset + t; the inverse rotation negates sin.
  std::vector<float> cos_t(size_t(T * half)), sin_t(size_t(T * half));
  const double sign = inverse ? -1.0 : 1.0;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = std::pow(double(base), -2.0 * double(i) / double(D));
    for (int64_t t = 0; t < T; ++t) {
      const double angle = double(pos_offset + t) * theta;
      cos_t[t * half + i] = float(std::cos(angle));
      sin_t[t * half + i] = float(sign * std::sin(angle));
    }
  }

  float* xp = x.data_as<float>();
  const int64_t rows = B * T;
#pragma omp parallel for schedule(static) if (rows * n_rot_heads * D > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* c = cos_t.data() + (r % T) * half;
    const float* s = sin_t.data() + (r % T) * half;
    for (int64_t h = 0; h < n_rot_heads; ++h) {
      float* lo = xp + (r * H + h) * D;  // x[i]
      float* hi = lo + half;             // x[i + D/2]
      for (int64_t i = 0; i < half; ++i) {
        const float a = lo[i], b = hi[i];
        lo[i] = a * c[i] - b * s[i];
        hi[i] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace ringloom::cpu
