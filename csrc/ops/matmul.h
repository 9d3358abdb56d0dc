// Linear layer GEMMs. Weights are stored [out, in] (row-major), as in nn.Linear:
//   forward:          y[M, N]  = x[M, K] @ w[N, K]^T + b[N] (+ r[M, N])
//   backward input:   dx[M, K] = dy[M, N] @ w[N, K]
//   backward weight:  dw[N, K] (+)= dy[M, N]^T @ x[M, K],   db[N] (+)= sum_m dy[m, :]
// x and dy may have any leading dims; they are flattened into M rows. The two backward
// halves are separate so pipeline schedules can run the weight half later (zero bubble).
// The forward's optional r is a residual stream added in the same GEMM (its C input with
// beta = 1), so a block's `x + proj(h)` writes y once and runs no add kernel.
// CPU: OpenBLAS sgemm. CUDA: cuBLASLt with bias and residual fused in the epilogue.
#pragma once
#include "core/tensor.h"

namespace ringloom {

Tensor matmul_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual = Tensor());
Tensor matmul_backward_input(const Tensor& dy, const Tensor& w);
// dbias may be undefined (no bias). accumulate=false overwrites dw/dbias.
void matmul_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor& dbias, bool accumulate);

namespace cpu {
Tensor matmul_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual);
Tensor matmul_backward_input(const Tensor& dy, const Tensor& w);
void matmul_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor& dbias, bool accumulate);
}  // namespace cpu
namespace cuda {
Tensor matmul_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual);
Tensor matmul_backward_input(const Tensor& dy, const Tensor& w);
void matmul_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor& dbias, bool accumulate);
}  // namespace cuda

}  // namespace ringloom
