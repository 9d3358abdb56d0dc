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
//
// CUDA Graphs: a captured step replays adamw_step's kernel with the arguments recorded at
// capture, so lr and step cannot travel as arguments there. With cfg.scalars set (a
// 3-element fp32 tensor on the parameters' device holding [lr, 1/(1-beta1^step),
// 1/(1-beta2^step)]) the op reads them from that tensor instead of cfg.lr and cfg.step;
// adamw_write_scalars fills it, in stream order, before each replay. Both paths compute
// the scalars with adamw_step_scalars, so eager and captured steps use the same bits.
#pragma once
#include <cmath>
#include <vector>

#include "core/tensor.h"

namespace ringloom {

struct AdamWConfig {
  float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  int64_t step = 1;  // 1-based step used for bias correction
  float max_norm = 0.0f;
  Tensor scalars;  // optional [lr, 1/bc1, 1/bc2] on the device, read instead of lr and step
};

struct AdamWStepScalars {
  float lr, inv_bc1, inv_bc2;
};
// lr and the inverse bias corrections of cfg.step. 1 - beta^step in double: at beta2 =
// 0.999, step 1 it is 1e-3, and pow in fp32 would leave only four good digits of it.
inline AdamWStepScalars adamw_step_scalars(const AdamWConfig& cfg) {
  const double bc1 = 1.0 - std::pow(double(cfg.beta1), double(cfg.step));
  const double bc2 = 1.0 - std::pow(double(cfg.beta2), double(cfg.step));
  return {cfg.lr, float(1.0 / bc1), float(1.0 / bc2)};
}

// Writes adamw_step_scalars(cfg) into `scalars` (3-element fp32, any device), in stream
// order on a GPU (a tiny kernel, so it never waits for the host or the device).
void adamw_write_scalars(const Tensor& scalars, const AdamWConfig& cfg);

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
void adamw_write_scalars(const Tensor& scalars, const AdamWConfig& cfg);
}  // namespace cpu
namespace cuda {
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg);
Tensor grad_norm(const std::vector<Tensor>& grads);
void adamw_write_scalars(const Tensor& scalars, const AdamWConfig& cfg);
}  // namespace cuda

}  // namespace ringloom
