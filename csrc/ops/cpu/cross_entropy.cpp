// CPU softmax cross-entropy (fp32 storage): the math is in ops/cross_entropy.h.
// Each row is a stable log-sum-exp: lse = m + log(sum_j exp(x_j - m)) with m = max_j x_j,
// so no exp overflows. Each exp is fp32 (the vectorised one of cpu/softmax_math.h), but
// the sum is accumulated in double because V is large (adding 50k terms of up to 1 in
// fp32 would lose ~4 digits).
// Rows are independent: OpenMP over rows.
#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/softmax_math.h"

namespace ringloom::cpu {

namespace {

// log sum_j exp(x_j), stably.
double row_lse(const float* x, int64_t V) {
  const float m = row_max(x, V);
  return double(m) + std::log(sum_exp_shifted(x, V, m));
}

// Shared by both entry points; grad == nullptr means forward only.
Tensor xent(const Tensor& logits, const Tensor& targets, int64_t ignore_index, float* grad, float grad_scale) {
  const int64_t N = logits.size(0), V = logits.size(1);
  Tensor losses = Tensor::empty({N}, DType::Float32);
  const float* x = logits.data_as<float>();
  const int32_t* t = targets.data_as<int32_t>();
  float* loss = losses.data_as<float>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * V;
    if (t[n] == ignore_index || V == 0) {
      loss[n] = 0.0f;
      if (grad) std::fill(grad + n * V, grad + (n + 1) * V, 0.0f);
      continue;
    }
    const double lse = row_lse(xn, V);
    loss[n] = float(lse - double(xn[t[n]]));
    if (grad) {
      // dlogits = grad_scale * (softmax - onehot); grad may alias x (fused in-place form),
      // which is fine: each element is read once, just before it is overwritten.
      float* gn = grad + n * V;
      exp_shifted(xn, gn, V, float(lse));  // softmax = exp(x - lse)
      for (int64_t j = 0; j < V; ++j) gn[j] *= grad_scale;
      gn[t[n]] -= grad_scale;
    }
  }
  return losses;
}

}  // namespace

Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  return xent(logits, targets, ignore_index, nullptr, 0.0f);
}

Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale) {
  return xent(logits, targets, ignore_index, logits.data_as<float>(), grad_scale);
}

}  // namespace ringloom::cpu
