#include "ops/elementwise.h"

#include "ops/dispatch.h"

namespace ringloom {

Tensor add(const Tensor& a, const Tensor& b) {
  const char* op = "add";
  check_same(op, {{"a", &a}, {"b", &b}}, true);
  check_shape(op, "b", b, a.shape());
  check_dtype_in(op, "a", a, {DType::Float32, DType::BFloat16});
  if (a.is_cpu()) check_cpu_float32(op, {{"a", &a}});
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  RL_DISPATCH(a, add_out(a, b, out));
  return out;
}

void add_(Tensor& a, const Tensor& b) {
  const char* op = "add_";
  check_same(op, {{"a", &a}, {"b", &b}}, true);
  check_shape(op, "b", b, a.shape());
  check_dtype_in(op, "a", a, {DType::Float32, DType::BFloat16});
  check_writable(op, "a", a);
  if (a.is_cpu()) check_cpu_float32(op, {{"a", &a}});
  RL_DISPATCH(a, add_out(a, b, a));
}

void scale_(Tensor& a, float s) {
  check_dtype_in("scale_", "a", a, {DType::Float32, DType::BFloat16});
  check_writable("scale_", "a", a);
  // Without this a CPU bfloat16 tensor would reach the fp32 kernel and be written past its end.
  if (a.is_cpu()) check_cpu_float32("scale_", {{"a", &a}});
  RL_DISPATCH(a, scale_(a, s));
}

}  // namespace ringloom
