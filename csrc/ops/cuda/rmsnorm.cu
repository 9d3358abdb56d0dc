// RMSNorm forward and backward on the shared norm kernels (norm_kernels.cuh, not
// centred: rstd saved, gamma only); the math is in ops/rmsnorm.h.
#include "ops/cuda/norm_kernels.cuh"
#include "ops/rmsnorm.h"

namespace ringloom::cuda {

std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps) {
  const int64_t C = x.size(-1);
  const int64_t rows = leading_rows(x.shape());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, DType::Float32, x.device());
  norm::forward</*kCenter=*/false>(x, gamma, nullptr, y, nullptr, rstd, eps);
  return {y, rstd};
}

Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
                        const Tensor& residual, Tensor* y) {
  return norm::backward</*kCenter=*/false>(dy, x, gamma, nullptr, rstd, dgamma, nullptr, residual, nullptr, y);
}

}  // namespace ringloom::cuda
