// CPU vocabulary-parallel cross-entropy (fp32 storage); the math is in
// ops/cross_entropy_shard.h. Sums of exponentials in double, as in cpu/cross_entropy.cpp.
// Rows are independent: OpenMP over rows.
#include "ops/cross_entropy_shard.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/softmax_math.h"

namespace ringloom::cpu {

namespace {
bool in_slice(int64_t target, int64_t start, int64_t V) { return target >= start && target < start + V; }
}  // namespace

Tensor cross_entropy_shard_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start) {
  const int64_t N = logits.size(0), V = logits.size(1);
  Tensor stats = Tensor::empty({N, 3}, DType::Float32);
  const float* x = logits.data_as<float>();
  const int32_t* t = targets.data_as<int32_t>();
  float* st = stats.data_as<float>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x + n * V;
    const float m = row_max(xn, V);
    st[3 * n] = m;
    st[3 * n + 1] = float(sum_exp_shifted(xn, V, m));
    st[3 * n + 2] = in_slice(t[n], vocab_start, V) ? xn[t[n] - vocab_start] : 0.0f;
  }
  return stats;
}

std::pair<Tensor, Tensor> cross_entropy_shard_combine(const Tensor& stats, const Tensor& targets,
                                                      int64_t ignore_index) {
  const int64_t R = stats.size(0), N = stats.size(1);
  Tensor losses = Tensor::empty({N}, DType::Float32);
  Tensor lse = Tensor::empty({N}, DType::Float32);
  const float* st = stats.data_as<float>();
  const int32_t* t = targets.data_as<int32_t>();
  float* lo = losses.data_as<float>();
  float* ls = lse.data_as<float>();
  for (int64_t n = 0; n < N; ++n) {
    float M = -std::numeric_limits<float>::infinity();
    for (int64_t r = 0; r < R; ++r) M = std::max(M, st[(r * N + n) * 3]);
    double s = 0.0, picked = 0.0;
    for (int64_t r = 0; r < R; ++r) {
      const float* e = st + (r * N + n) * 3;
      s += double(e[1]) * std::exp(double(e[0]) - double(M));
      picked += double(e[2]);
    }
    const double l = double(M) + std::log(s);
    ls[n] = float(l);
    lo[n] = t[n] == ignore_index ? 0.0f : float(l - picked);
  }
  return {losses, lse};
}

void cross_entropy_shard_backward(Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t vocab_start,
                                  int64_t ignore_index, float grad_scale) {
  const int64_t N = logits.size(0), V = logits.size(1);
  float* x = logits.data_as<float>();
  const int32_t* t = targets.data_as<int32_t>();
  const float* ls = lse.data_as<float>();
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float* xn = x + n * V;
    if (t[n] == ignore_index) {
      std::fill(xn, xn + V, 0.0f);
      continue;
    }
    exp_shifted(xn, xn, V, ls[n]);  // softmax over the full row, this slice of it
    for (int64_t j = 0; j < V; ++j) xn[j] *= grad_scale;
    if (in_slice(t[n], vocab_start, V)) xn[t[n] - vocab_start] -= grad_scale;
  }
}

}  // namespace ringloom::cpu
