// RMSNorm over the last dim C (Zhang & Sennrich 2019):
//   rstd = 1/sqrt(sum(x^2)/C + eps),  y = x * rstd * gamma
// backward (per row, g = dy*gamma):
//   dx = rstd * (g - x * rstd^2 * mean(g*x)),   dgamma += sum_rows dy * x * rstd
// The backward's optional residual (added to dx) and y (the forward output, bitwise) are
// those of layernorm_backward (ops/layernorm.h).
#pragma once
#include <tuple>

#include "core/tensor.h"

namespace ringloom {

// Returns (y, rstd[rows]).
std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps);
// Returns dx (+ residual); accumulates into dgamma; *y = the forward output when y is not null.
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
                        const Tensor& residual = Tensor(), Tensor* y = nullptr);

namespace cpu {
std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps);
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
                        const Tensor& residual, Tensor* y);
}  // namespace cpu
namespace cuda {
std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps);
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
                        const Tensor& residual, Tensor* y);
}  // namespace cuda

}  // namespace ringloom
