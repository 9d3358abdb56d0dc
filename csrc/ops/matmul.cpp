#include "ops/matmul.h"

#include <algorithm>

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_linear(const char* op, const Tensor& x, const char* xname, const Tensor& w, int64_t x_last, int64_t w_dim) {
  check_same(op, {{xname, &x}, {"w", &w}}, true);
  check_dtype_in(op, "w", w, {DType::Float32, DType::BFloat16});
  check_dim(op, "w", w, 2);
  RL_CHECK(x.dim() >= 1, Value, op, ": ", xname, " must have at least 1 dimension, got ", x.describe());
  RL_CHECK(x.size(-1) == w.size(w_dim), Value, op, ": last dim of ", xname, " (", x.describe(),
           ") must equal dim ", w_dim, " of w (", w.describe(), ")");
  (void)x_last;
  if (x.is_cpu()) check_cpu_float32(op, {{xname, &x}, {"w", &w}});
}
}  // namespace

Tensor matmul_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  const char* op = "matmul_forward";
  check_linear(op, x, "x", w, 0, 1);
  if (bias.defined()) {
    check_same(op, {{"x", &x}, {"bias", &bias}}, true);
    check_shape(op, "bias", bias, {w.size(0)});
  }
  if (residual.defined()) {
    check_same(op, {{"x", &x}, {"residual", &residual}}, true);
    Shape ys = x.shape();
    ys.back() = w.size(0);
    check_shape(op, "residual", residual, ys);
  }
  return RL_DISPATCH(x, matmul_forward(x, w, bias, residual));
}

Tensor matmul_backward_input(const Tensor& dy, const Tensor& w) {
  const char* op = "matmul_backward_input";
  check_linear(op, dy, "dy", w, 0, 0);
  return RL_DISPATCH(dy, matmul_backward_input(dy, w));
}

void matmul_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor& dbias, bool accumulate) {
  const char* op = "matmul_backward_weight";
  check_same(op, {{"dy", &dy}, {"x", &x}}, true);
  check_same(op, {{"dy", &dy}, {"dw", &dw}}, false);
  check_dtype_in(op, "dw", dw, {DType::Float32, DType::BFloat16});
  check_writable(op, "dw", dw);
  if (dbias.defined()) check_writable(op, "dbias", dbias);
  RL_CHECK(dy.dim() >= 1 && x.dim() >= 1 && leading_rows(dy.shape()) == leading_rows(x.shape()),
           Value, op, ": dy (", dy.describe(), ") and x (", x.describe(), ") must have the same rows");
  check_shape(op, "dw", dw, {dy.size(-1), x.size(-1)});
  if (dbias.defined()) {
    check_same(op, {{"dy", &dy}, {"dbias", &dbias}}, false);
    check_shape(op, "dbias", dbias, {dy.size(-1)});
  }
  if (dy.is_cpu()) {
    check_cpu_float32(op, {{"dy", &dy}, {"x", &x}, {"dw", &dw}});
    if (dbias.defined()) check_cpu_float32(op, {{"dbias", &dbias}});
  }
  RL_DISPATCH(dy, matmul_backward_weight(dy, x, dw, dbias, accumulate));
}

}  // namespace ringloom
