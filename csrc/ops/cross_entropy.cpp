#include "ops/cross_entropy.h"

#include <cmath>

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_xent(const char* op, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_dtype_in(op, "logits", logits, {DType::Float32, DType::BFloat16});
  check_dim(op, "logits", logits, 2);
  check_dtype(op, "targets", targets, DType::Int32);
  check_shape(op, "targets", targets, {logits.size(0)});
  check_same(op, {{"logits", &logits}, {"targets", &targets}}, false);
  if (logits.is_cpu()) {
    check_cpu_float32(op, {{"logits", &logits}});
    const int32_t* t = targets.data_as<int32_t>();
    const int64_t V = logits.size(1);
    for (int64_t i = 0; i < targets.numel(); ++i)
      RL_CHECK(t[i] == ignore_index || (t[i] >= 0 && t[i] < V), Value, op, ": target ", t[i], " at row ", i,
               " is outside [0, ", V, ") and is not the ignore index ", ignore_index);
  }
}
}  // namespace

Tensor cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_xent("cross_entropy_forward", logits, targets, ignore_index);
  return RL_DISPATCH(logits, cross_entropy_forward(logits, targets, ignore_index));
}

Tensor cross_entropy_forward_backward(Tensor& logits, const Tensor& targets, int64_t ignore_index, float grad_scale) {
  check_xent("cross_entropy_forward_backward", logits, targets, ignore_index);
  check_writable("cross_entropy_forward_backward", "logits (overwritten by the gradient)", logits);
  RL_CHECK(std::isfinite(grad_scale), Value, "cross_entropy_forward_backward: grad_scale must be finite, got ",
           grad_scale);
  return RL_DISPATCH(logits, cross_entropy_forward_backward(logits, targets, ignore_index, grad_scale));
}

}  // namespace ringloom
