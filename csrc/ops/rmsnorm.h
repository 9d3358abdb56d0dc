// RMSNorm over the last dim C (Zhang & Sennrich 2019):
//   rstd = 1/sqrt(sum(x^2)/C + eps),  y = x * rstd * gamma
// backward (per row, g = dy*gamma):
//   dx = rstd * (g - x * rstd^2 * mean(g*x)),   dgamma += sum_rows dy * x * rstd
#pragma once
#include <tuple>

#include "core/tensor.h"

namespace ringloom {

// Returns (y, rstd[rows]).
std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps);
// Returns dx; accumulates into dgamma.
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma);

namespace cpu {
std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps);
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma);
}  // namespace cpu
namespace cuda {
std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps);
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma);
}  // namespace cuda

}  // namespace ringloom
