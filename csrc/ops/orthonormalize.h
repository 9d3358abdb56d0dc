// orthonormalize_columns_(p): p fp32 [rows, r], in place, becomes a matrix with orthonormal
// columns spanning the same space, by modified Gram-Schmidt in column order (the
// orthonormalisation step of PowerSGD, Vogels, Karimireddy, Jaggi 2019, Algorithm 1):
//
//   for j = 0 .. r-1:
//     for i = 0 .. j-1:  d = <p_i, p_j>;  p_j = p_j - d p_i
//     nrm = ||p_j||;  p_j = p_j / nrm   (only when nrm > 0)
//
// Dot products and norms are accumulated in float64, and p_j - d p_i and p_j / nrm are
// computed in float64 and rounded once to fp32. A column whose norm is zero after its
// projections (a zero column) stays zero: the
// result then has fewer than r nonzero columns, and PowerSGD's Q = M^T P gets zero columns
// too, so its approximation P Q^T simply has lower rank. NaN or inf propagate. The same
// algorithm runs on CPU and CUDA; only the order of the float64 sums differs (CUDA: one
// block per matrix, a fixed tree), so the two agree to fp32 rounding. Columns beyond the
// first `rows` are numerically dependent and get no meaning; callers keep r <= rows.
#pragma once
#include "core/tensor.h"

namespace ringloom {

void orthonormalize_columns_(Tensor& p);

namespace cpu {
void orthonormalize_columns_(Tensor& p);
}  // namespace cpu
namespace cuda {
void orthonormalize_columns_(Tensor& p);
}  // namespace cuda

}  // namespace ringloom
