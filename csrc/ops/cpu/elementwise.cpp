#include "ops/elementwise.h"

namespace ringloom::cpu {

void add_out(const Tensor& a, const Tensor& b, Tensor& out) {
  const float* pa = a.data_as<float>();
  const float* pb = b.data_as<float>();
  float* po = out.data_as<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
}

void scale_(Tensor& a, float s) {
  float* p = a.data_as<float>();
  const int64_t n = a.numel();
  for (int64_t i = 0; i < n; ++i) p[i] *= s;
}

}  // namespace ringloom::cpu
