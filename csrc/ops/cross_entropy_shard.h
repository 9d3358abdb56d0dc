// Vocabulary-parallel softmax cross-entropy: R ranks each hold the logits of a contiguous
// slice [vocab_start, vocab_start + V_r) of the vocabulary, logits_r [N, V_r]; no rank ever
// holds a full row. The full row's log-sum-exp is assembled from per-slice statistics:
//   stats_r[n] = (m_r, s_r, t_r)    m_r = max_j x_j,  s_r = sum_j exp(x_j - m_r),
//                                   t_r = x[target - vocab_start] if the target is in the
//                                         slice, else 0
//   (the R rows of stats are all-gathered: 3 floats per row per rank, not V_r)
//   M = max_r m_r,  lse = M + log(sum_r s_r exp(m_r - M)),  loss_n = lse - sum_r t_r
//   dlogits_r = grad_scale * (exp(x - lse) - onehot(target - vocab_start))    (local)
// Rows whose target equals ignore_index have loss 0 and gradient 0. Combining (m, s)
// pairs this way is the merge step of the online softmax (Milakov & Gimelshein 2018).
#pragma once
#include <utility>

#include "core/tensor.h"

namespace ringloom {

// stats [N, 3] fp32 of this slice of the vocabulary.
Tensor cross_entropy_shard_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start);
// From every slice's stats [R, N, 3] (rank order irrelevant): (losses [N], lse [N]) fp32.
std::pair<Tensor, Tensor> cross_entropy_shard_combine(const Tensor& stats, const Tensor& targets,
                                                      int64_t ignore_index);
// Overwrites logits [N, V_r] with this slice's gradient.
void cross_entropy_shard_backward(Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t vocab_start,
                                  int64_t ignore_index, float grad_scale);

namespace cpu {
Tensor cross_entropy_shard_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start);
std::pair<Tensor, Tensor> cross_entropy_shard_combine(const Tensor& stats, const Tensor& targets, int64_t ignore_index);
void cross_entropy_shard_backward(Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t vocab_start,
                                  int64_t ignore_index, float grad_scale);
}  // namespace cpu
namespace cuda {
Tensor cross_entropy_shard_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start);
std::pair<Tensor, Tensor> cross_entropy_shard_combine(const Tensor& stats, const Tensor& targets, int64_t ignore_index);
void cross_entropy_shard_backward(Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t vocab_start,
                                  int64_t ignore_index, float grad_scale);
}  // namespace cuda

}  // namespace ringloom
