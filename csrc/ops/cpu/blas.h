// The one place the CPU code calls BLAS: row-major sgemm through OpenBLAS (the
// scipy-openblas32 wheel, whose symbols carry a scipy_ prefix).
//   C[M, N] = alpha * op(A) @ op(B) + beta * C,   op(X) = X or X^T
#pragma once
#include <cstdint>

namespace ringloom::cpu {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace ringloom::cpu
