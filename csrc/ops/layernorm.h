// LayerNorm over the last dim C (Ba et al. 2016):
//   mean = sum(x)/C,  rstd = 1/sqrt(sum((x-mean)^2)/C + eps),  xhat = (x-mean)*rstd
//   y = xhat * gamma + beta
// backward (per row, g = dy*gamma):
//   dx = rstd * (g - mean(g) - xhat * mean(g*xhat))
//   dgamma += sum_rows dy*xhat,  dbeta += sum_rows dy
// mean and rstd are saved in fp32, one per row.
//
// The backward takes two optional extras, each folded into its single pass over the row:
//   residual  added to dx: the gradient reaching x through a skip connection around the
//             norm (x feeds both the norm and the residual stream), so no add kernel runs;
//   y         (with beta) receives the forward output, bitwise what the forward returns:
//             the backward reads x and the statistics anyway, so activation recomputation
//             of the norm's output costs one write.
#pragma once
#include <tuple>

#include "core/tensor.h"

namespace ringloom {

// Returns (y, mean[rows], rstd[rows]).
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
// Returns dx (+ residual); accumulates into dgamma and dbeta; *y = the forward output when
// y is not null (beta must then be given).
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta, const Tensor& residual = Tensor(),
                          const Tensor& beta = Tensor(), Tensor* y = nullptr);

namespace cpu {
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta, const Tensor& residual,
                          const Tensor& beta, Tensor* y);
}  // namespace cpu
namespace cuda {
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta, const Tensor& residual,
                          const Tensor& beta, Tensor* y);
}  // namespace cuda

}  // namespace ringloom
