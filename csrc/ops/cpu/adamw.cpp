// CPU AdamW and global gradient norm (fp32): the math is in ops/adamw.h.
// One pass per tensor reads grad, m, v and p once and writes m, v, p (and the compute copy)
// once; the bias corrections and the clip factor are scalars worked out before the pass.
// Both loops are elementwise, so OpenMP splits each tensor's elements across threads.
#include "ops/adamw.h"

#include <algorithm>
#include <cmath>

namespace ringloom::cpu {

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg) {
  // clip = min(1, max_norm / (norm + 1e-6)) rescales g so that the global norm is at most max_norm.
  float clip = 1.0f;
  if (cfg.max_norm > 0) clip = std::min(1.0f, cfg.max_norm / (grad_norm.data_as<float>()[0] + 1e-6f));
  // lr and the bias corrections: from cfg, or from cfg.scalars when given (ops/adamw.h).
  AdamWStepScalars sc = adamw_step_scalars(cfg);
  if (cfg.scalars.defined()) {
    const float* d = cfg.scalars.data_as<float>();
    sc = {d[0], d[1], d[2]};
  }
  const float inv_bc1 = sc.inv_bc1, inv_bc2 = sc.inv_bc2;
  const float b1 = cfg.beta1, b2 = cfg.beta2, lr = sc.lr, eps = cfg.eps;

  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t n = params[i].numel();
    float* p = params[i].data_as<float>();
    const float* g = grads[i].data_as<float>();
    float* mi = m[i].data_as<float>();
    float* vi = v[i].data_as<float>();
    const float wd = weight_decay[i];
    float* c32 = nullptr;
    uint16_t* c16 = nullptr;
    if (!compute.empty()) {
      const Tensor& c = compute[i];
      if (c.dtype() == DType::Float32) c32 = c.data_as<float>();
      else c16 = c.data_as<uint16_t>();  // bfloat16, the only other dtype validation lets through
    }
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t j = 0; j < n; ++j) {
      const float gj = g[j] * clip;
      const float mj = b1 * mi[j] + (1.0f - b1) * gj;
      const float vj = b2 * vi[j] + (1.0f - b2) * gj * gj;
      mi[j] = mj;
      vi[j] = vj;
      // Decoupled weight decay: wd * p is added to the step, not to the gradient.
      const float pj = p[j] - lr * ((mj * inv_bc1) / (std::sqrt(vj * inv_bc2) + eps) + wd * p[j]);
      p[j] = pj;
      if (c32) c32[j] = pj;
      if (c16) c16[j] = float_to_bf16_bits(pj);
    }
  }
}

void adamw_write_scalars(const Tensor& scalars, const AdamWConfig& cfg) {
  const AdamWStepScalars sc = adamw_step_scalars(cfg);
  float* d = scalars.data_as<float>();
  d[0] = sc.lr, d[1] = sc.inv_bc1, d[2] = sc.inv_bc2;
}

Tensor grad_norm(const std::vector<Tensor>& grads) {
  double sum = 0.0;
  for (const Tensor& t : grads) {
    const float* g = t.data_as<float>();
    const int64_t n = t.numel();
#pragma omp parallel for reduction(+ : sum) schedule(static) if (n > 32768)
    for (int64_t j = 0; j < n; ++j) sum += double(g[j]) * g[j];
  }
  Tensor out = Tensor::empty({1}, DType::Float32);
  out.data_as<float>()[0] = float(std::sqrt(sum));
  return out;
}

}  // namespace ringloom::cpu
