// LayerNorm forward and backward on the shared norm kernels (norm_kernels.cuh, centred:
// mean and rstd saved, gamma and beta); the math is in ops/layernorm.h.
#include "ops/cuda/norm_kernels.cuh"
#include "ops/layernorm.h"

namespace ringloom::cuda {

std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                     float eps) {
  const int64_t C = x.size(-1);
  const int64_t rows = leading_rows(x.shape());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, DType::Float32, x.device());
  Tensor rstd = Tensor::empty({rows}, DType::Float32, x.device());
  norm::forward</*kCenter=*/true>(x, gamma, &beta, y, &mean, rstd, eps);
  return {y, mean, rstd};
}

Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta, const Tensor& residual,
                          const Tensor& beta, Tensor* y) {
  RL_CHECK(dgamma.dtype() == dbeta.dtype(), Type, "layernorm_backward: dgamma (", dgamma.describe(),
           ") and dbeta (", dbeta.describe(), ") must have the same dtype");
  return norm::backward</*kCenter=*/true>(dy, x, gamma, &mean, rstd, dgamma, &dbeta, residual, &beta, y);
}

}  // namespace ringloom::cuda
