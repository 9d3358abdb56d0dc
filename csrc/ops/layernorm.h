// LayerNorm over the last dim C (Ba et al. 2016):
//   mean = sum(x)/C,  rstd = 1/sqrt(sum((x-mean)^2)/C + eps),  xhat = (x-mean)*rstd
//   y = xhat * gamma + beta
// backward (per row, g = dy*gamma):
//   dx = rstd * (g - mean(g) - xhat * mean(g*xhat))
//   dgamma += sum_rows dy*xhat,  dbeta += sum_rows dy
// mean and rstd are saved in fp32, one per row.
#pragma once
#include <tuple>

#include "core/tensor.h"

namespace ringloom {

// Returns (y, mean[rows], rstd[rows]).
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
// Returns dx; accumulates into dgamma and dbeta.
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta);

namespace cpu {
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta);
}  // namespace cpu
namespace cuda {
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta);
}  // namespace cuda

}  // namespace ringloom
