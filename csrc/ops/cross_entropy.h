// Softmax cross-entropy over logits[N, V] with int32 targets[N]; rows whose target equals
// ignore_index contribute no loss and no gradient.
//   loss_n = lse(logits_n) - logits_n[t_n],   dlogits_n = grad_scale * (softmax(logits_n) - onehot(t_n))
// The fused form writes the gradient over the logits in place (no second V-wide buffer),
// which is what a training step wants; grad_scale is usually 1/(number of counted rows).
#pragma once
#include "core/tensor.h"

namespace ringloom {

// Per-row losses [N] fp32 (0 for ignored rows); logits unchanged.
Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index);
// Per-row losses [N] fp32; logits overwritten with their gradient.
Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale);

namespace cpu {
Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index);
Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale);
}  // namespace cpu
namespace cuda {
Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index);
Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale);
}  // namespace cuda

}  // namespace ringloom
