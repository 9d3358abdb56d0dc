#include "ops/cross_entropy_shard.h"

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_slice(const char* op, const Tensor& logits, const Tensor& targets, int64_t vocab_start) {
  check_dtype_in(op, "logits", logits, {DType::Float32, DType::BFloat16});
  check_dim(op, "logits", logits, 2);
  check_dtype(op, "targets", targets, DType::Int32);
  check_shape(op, "targets", targets, {logits.size(0)});
  check_same(op, {{"logits", &logits}, {"targets", &targets}}, false);
  RL_CHECK(vocab_start >= 0, Value, op, ": vocab_start must be >= 0, got ", vocab_start);
  if (logits.is_cpu()) check_cpu_float32(op, {{"logits", &logits}});
}
}  // namespace

Tensor cross_entropy_shard_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start) {
  const char* op = "cross_entropy_shard_stats";
  check_slice(op, logits, targets, vocab_start);
  RL_CHECK(logits.size(1) > 0, Value, op, ": the vocabulary slice is empty (logits ", logits.describe(), ")");
  return RL_DISPATCH(logits, cross_entropy_shard_stats(logits, targets, vocab_start));
}

std::pair<Tensor, Tensor> cross_entropy_shard_combine(const Tensor& stats, const Tensor& targets,
                                                      int64_t ignore_index) {
  const char* op = "cross_entropy_shard_combine";
  check_dtype(op, "stats", stats, DType::Float32);
  check_dim(op, "stats", stats, 3);
  RL_CHECK(stats.size(0) > 0 && stats.size(2) == 3, Value, op, ": stats must be [R, N, 3] with R >= 1, got ",
           stats.describe());
  check_dtype(op, "targets", targets, DType::Int32);
  check_shape(op, "targets", targets, {stats.size(1)});
  check_same(op, {{"stats", &stats}, {"targets", &targets}}, false);
  return RL_DISPATCH(stats, cross_entropy_shard_combine(stats, targets, ignore_index));
}

void cross_entropy_shard_backward(Tensor& logits, const Tensor& targets, const Tensor& lse, int64_t vocab_start,
                                  int64_t ignore_index, float grad_scale) {
  const char* op = "cross_entropy_shard_backward";
  check_slice(op, logits, targets, vocab_start);
  check_dtype(op, "lse", lse, DType::Float32);
  check_shape(op, "lse", lse, {logits.size(0)});
  check_same(op, {{"logits", &logits}, {"lse", &lse}}, false);
  RL_DISPATCH(logits, cross_entropy_shard_backward(logits, targets, lse, vocab_start, ignore_index, grad_scale));
}

}  // namespace ringloom
