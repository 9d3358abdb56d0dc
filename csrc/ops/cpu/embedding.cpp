// CPU token (+ position) embedding; the math is in ops/embedding.h. Inputs were validated by
// the entry point (ids in range, T <= max positions, fp32, contiguous).
//
// Backward without atomics: every element of dwte is owned by exactly one partition of the
// vocabulary, and each partition walks the rows in (b, t) order. So each dwte entry sums its
// contributions in the same order on any number of threads: bit-identical results.
#include "ops/embedding.h"

#include <algorithm>

namespace ringloom::cpu {

namespace {
// Below this many floats moved, threads cost more than they save.
constexpr int64_t kParallelMin = 1 << 15;

// The full table is the slice starting at 0 whose ids are all inside it (checked by the
// entry point); `shard` marks a slice, where ids outside [start, start + V) are skipped.
Tensor forward_rows(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t start, bool shard) {
  const int64_t V = wte.size(0);
  const int64_t B = ids.size(0), T = ids.size(1), C = wte.size(1);
  Tensor out = Tensor::empty({B, T, C}, DType::Float32);
  const int32_t* id = ids.data_as<int32_t>();
  const float* te = wte.data_as<float>();
  const float* pe = wpe.defined() ? wpe.data_as<float>() : nullptr;
  float* o = out.data_as<float>();
  const int64_t rows = B * T;
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t v = int64_t(id[r]) - start;
    float* dst = o + r * C;
    if (shard && (v < 0 || v >= V)) {
      for (int64_t c = 0; c < C; ++c) dst[c] = pe ? pe[(r % T) * C + c] : 0.0f;
      continue;
    }
    const float* tok = te + v * C;
    if (pe) {
      const float* pos = pe + (r % T) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = tok[c] + pos[c];
    } else {
      for (int64_t c = 0; c < C; ++c) dst[c] = tok[c];
    }
  }
  return out;
}

void backward_rows(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t start) {
  const int64_t B = ids.size(0), T = ids.size(1), C = dwte.size(1), V = dwte.size(0);
  const int32_t* id = ids.data_as<int32_t>();
  const float* g = dout.data_as<float>();
  float* dte = dwte.data_as<float>();
  const int64_t rows = B * T;

  // dwte[ids[r] - start] += dout[r]. The vocabulary is cut into `parts` ranges; each range scans all
  // ids (cheap next to the C-wide adds) and applies only its own rows, in row order.
  const int64_t parts = std::min<int64_t>(V, 64);
#pragma omp parallel for schedule(dynamic, 1) if (rows * C > kParallelMin)
  for (int64_t p = 0; p < parts; ++p) {
    const int64_t lo = V * p / parts, hi = V * (p + 1) / parts;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t v = int64_t(id[r]) - start;  // outside the slice: outside every range
      if (v < lo || v >= hi) continue;
      float* dst = dte + v * C;
      const float* src = g + r * C;
      for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
    }
  }

  // dwpe[t] += sum_b dout[b, t]: position t is owned by one iteration, b runs in order.
  if (dwpe.defined()) {
    float* dpe = dwpe.data_as<float>();
#pragma omp parallel for schedule(static) if (rows * C > kParallelMin)
    for (int64_t t = 0; t < T; ++t) {
      float* dst = dpe + t * C;
      for (int64_t b = 0; b < B; ++b) {
        const float* src = g + (b * T + t) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
      }
    }
  }
}

}  // namespace

Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe) {
  return forward_rows(ids, wte, wpe, 0, false);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe) {
  backward_rows(ids, dout, dwte, dwpe, 0);
}

Tensor embedding_shard_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t vocab_start) {
  return forward_rows(ids, wte, wpe, vocab_start, true);
}

void embedding_shard_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t vocab_start) {
  backward_rows(ids, dout, dwte, dwpe, vocab_start);
}

}  // namespace ringloom::cpu
