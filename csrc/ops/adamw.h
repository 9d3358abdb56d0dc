// AdamW (Loshchilov & Hutter 2019) over many tensors at once, with decoupled weight decay
// and bias correction; optional global-norm clipping folded into the same pass.
//   g = grad * clip,  clip = min(1, max_norm / (norm + 1e-6)) when max_norm > 0 else 1
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   mhat = m / (1 - b1^step);  vhat = v / (1 - b2^step)
//   p = p - lr * (mhat / (sqrt(vhat) + eps) + wd * p)
// params/m/v are fp32 masters. If `compute` is non-empty, compute[i] (bf16 or fp32, same
// shape) receives the updated parameter in the same pass: the bf16 copy the GPU model uses.
// grad_norm is a 1-element fp32 tensor from grad_norm() on the same device (may be
// undefined when max_norm <= 0): reading it on the device keeps the step free of host syncs.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace ringloom {

struct AdamWConfig {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  int64_t step = 1;  // 1-based step used for bias correction
  float max_norm = 0.0f;
};

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg);

// sqrt(sum over all tensors of sum(g^2)), as a 1-element fp32 tensor on the grads' device.
Tensor grad_norm(const std::vector<Tensor>& grads);

namespace cpu {
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg);
Tensor grad_norm(const std::vector<Tensor>& grads);
}  // namespace cpu
namespace cuda {
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg);
Tensor grad_norm(const std::vector<Tensor>& grads);
}  // namespace cuda

}  // namespace ringloom
