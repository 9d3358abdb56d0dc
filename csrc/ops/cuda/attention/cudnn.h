// cuDNN's fused scaled-dot-product attention as a backend of the attention op (selected by
// ops/attention_backend.h). Same inputs, outputs and math as ops/attention.h; bf16 only,
// head dim 64 or 128. Without the cudnn-frontend headers at build time the functions throw
// "cuDNN attention not built".
#pragma once
#include <utility>

#include "core/tensor.h"

namespace ringloom::cuda {

// Whether cuDNN can run this problem (bf16, D 64/128, built with the frontend).
bool cudnn_attention_supports(const Tensor& qkv);
std::pair<Tensor, Tensor> cudnn_attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                                  float scale);
Tensor cudnn_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                int64_t n_head, int64_t n_kv_head, bool causal, float scale);

}  // namespace ringloom::cuda
