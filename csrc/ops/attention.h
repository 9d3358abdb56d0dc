// Multi-head scaled dot-product self-attention with grouped-query attention (GQA,
// Ainslie et al. 2023), flash style (Dao et al. 2022): the S x S score matrix is never
// stored; the per-row log-sum-exp is saved for backward.
//
// Input is the packed output of the QKV projection, qkv[B, T, Hq + 2*Hkv, D]: heads
// [0, Hq) are queries, [Hq, Hq+Hkv) keys, [Hq+Hkv, Hq+2Hkv) values. Query head h reads
// key/value head h / (Hq/Hkv).
//   s[i, j] = scale * q_i . k_j      (j <= i when causal)
//   lse_i   = log sum_j exp(s[i, j]),  p[i, j] = exp(s[i, j] - lse_i),  out_i = sum_j p[i, j] v_j
// backward:  dv_j += sum_i p_ij dout_i;  dp_ij = dout_i . v_j;  D_i = dout_i . out_i
//            ds_ij = p_ij (dp_ij - D_i);  dq_i = scale sum_j ds_ij k_j;  dk_j = scale sum_i ds_ij q_i
// scale <= 0 means 1/sqrt(D).
// deterministic: the backward sums every gradient in a fixed order, so that it is bitwise
// the same run to run (on CUDA our kernels then compute dq by a separate pass over the key
// blocks instead of fp32 atomics, about 1.4x the backward's matrix work; the CPU op always
// is). It takes precedence over the attention backend's auto choice (our kernels run the
// backward); the cudnn backend rejects it.
#pragma once
#include <utility>

#include "core/tensor.h"

namespace ringloom {

// Returns (out[B, T, Hq, D], lse[B, Hq, T] fp32).
std::pair<Tensor, Tensor> attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                            float scale);
// Returns dqkv[B, T, Hq + 2*Hkv, D]; deterministic as above.
Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          int64_t n_head, int64_t n_kv_head, bool causal, float scale, bool deterministic = false);

namespace cpu {
std::pair<Tensor, Tensor> attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                            float scale);
Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          int64_t n_head, int64_t n_kv_head, bool causal, float scale, bool deterministic);
}  // namespace cpu
namespace cuda {
std::pair<Tensor, Tensor> attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                            float scale);
Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                          int64_t n_head, int64_t n_kv_head, bool causal, float scale, bool deterministic);
}  // namespace cuda

}  // namespace ringloom
