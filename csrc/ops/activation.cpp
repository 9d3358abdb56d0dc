#include "ops/activation.h"

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_act(const char* op, const Tensor& x) {
  check_dtype_in(op, "x", x, {DType::Float32, DType::BFloat16});
  if (x.is_cpu()) check_cpu_float32(op, {{"x", &x}});
}
void check_act_grad(const char* op, const Tensor& dy, const Tensor& x, const Shape& dy_shape) {
  check_act(op, x);
  check_same(op, {{"dy", &dy}, {"x", &x}}, true);
  check_shape(op, "dy", dy, dy_shape);
}
void check_swiglu(const char* op, const Tensor& x) {
  check_act(op, x);
  RL_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, Value, op, ": last dim of x must be even (gate|up), got ",
           x.describe());
}
Shape halved(const Tensor& x) {
  Shape s = x.shape();
  s.back() /= 2;
  return s;
}
}  // namespace

Tensor gelu_forward(const Tensor& x) {
  check_act("gelu_forward", x);
  return RL_DISPATCH(x, gelu_forward(x));
}

Tensor gelu_backward(const Tensor& dy, const Tensor& x, Tensor* y) {
  check_act_grad("gelu_backward", dy, x, x.shape());
  return RL_DISPATCH(x, gelu_backward(dy, x, y));
}

Tensor swiglu_forward(const Tensor& x) {
  check_swiglu("swiglu_forward", x);
  return RL_DISPATCH(x, swiglu_forward(x));
}

Tensor swiglu_backward(const Tensor& dy, const Tensor& x, Tensor* y) {
  check_swiglu("swiglu_backward", x);
  check_act_grad("swiglu_backward", dy, x, halved(x));
  return RL_DISPATCH(x, swiglu_backward(dy, x, y));
}

}  // namespace ringloom
