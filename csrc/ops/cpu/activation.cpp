// CPU GELU (tanh approximation) and SwiGLU; the math and its derivatives are in
// ops/activation.h, the scalar formulas (shared with the CUDA kernels) in
// ops/activation_math.h. Pointwise in fp32; the packed SwiGLU input is walked row by row
// (a row is [gate F | up F]) so every inner loop is contiguous. The sigmoid is the
// vectorisable one of cpu/sigmoid.h (about 8x faster than one built on std::exp; GELU
// through it is one exp instead of a glibc tanhf, several times slower).
#include "ops/activation.h"

#include <algorithm>

#include "ops/activation_math.h"
#include "ops/cpu/sigmoid.h"

namespace ringloom::cpu {

namespace {
constexpr int64_t kParallelMin = 1 << 14;  // elements; smaller problems stay on one thread
}  // namespace

Tensor gelu_forward(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), DType::Float32);
  const float* xp = x.data_as<float>();
  float* yp = y.data_as<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yp[i] = act::gelu(xp[i], Sigmoid{});
  return y;
}

Tensor gelu_backward(const Tensor& dy, const Tensor& x, Tensor* y) {
  Tensor dx = Tensor::empty(x.shape(), DType::Float32);
  if (y) *y = Tensor::empty(x.shape(), DType::Float32);
  const float* g = dy.data_as<float>();
  const float* xp = x.data_as<float>();
  float* dxp = dx.data_as<float>();
  float* yp = y ? y->data_as<float>() : nullptr;
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const act::GeluGrad d = act::gelu_grad(g[i], xp[i], Sigmoid{});
    dxp[i] = d.dx;
    if (yp) yp[i] = d.y;
  }
  return dx;
}

Tensor swiglu_forward(const Tensor& x) {
  const int64_t F = x.size(-1) / 2, rows = leading_rows(x.shape());
  Shape shape = x.shape();
  shape.back() = F;
  Tensor y = Tensor::empty(shape, DType::Float32);
  const float* xp = x.data_as<float>();
  float* yp = y.data_as<float>();
#pragma omp parallel for schedule(static) if (rows * F > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = xp + r * 2 * F;  // gate
    const float* b = a + F;           // up
    float* yr = yp + r * F;
    for (int64_t j = 0; j < F; ++j) yr[j] = act::swiglu(a[j], b[j], Sigmoid{});
  }
  return y;
}

Tensor swiglu_backward(const Tensor& dy, const Tensor& x, Tensor* y) {
  const int64_t F = x.size(-1) / 2, rows = leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape(), DType::Float32);
  if (y) *y = Tensor::empty(dy.shape(), DType::Float32);
  const float* g = dy.data_as<float>();
  const float* xp = x.data_as<float>();
  float* dxp = dx.data_as<float>();
  float* yp = y ? y->data_as<float>() : nullptr;
#pragma omp parallel for schedule(static) if (rows * F > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = xp + r * 2 * F;
    const float* b = a + F;
    const float* gr = g + r * F;
    float* da = dxp + r * 2 * F;
    float* db = da + F;
    for (int64_t j = 0; j < F; ++j) {
      const act::SwigluGrad d = act::swiglu_grad(gr[j], a[j], b[j], Sigmoid{});
      da[j] = d.da;
      db[j] = d.db;
      if (yp) yp[r * F + j] = d.y;
    }
  }
  return dx;
}

}  // namespace ringloom::cpu
