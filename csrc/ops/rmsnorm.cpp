#include "ops/rmsnorm.h"

#include <algorithm>
#include <cmath>

#include "ops/dispatch.h"
#include "ops/norm_checks.h"

namespace ringloom {

std::tuple<Tensor, Tensor> rmsnorm_forward(const Tensor& x, const Tensor& gamma, float eps) {
  const char* op = "rmsnorm_forward";
  check_same(op, {{"x", &x}, {"gamma", &gamma}}, true);
  check_dtype_in(op, "x", x, {DType::Float32, DType::BFloat16});
  RL_CHECK(x.dim() >= 1, Value, op, ": x must have at least 1 dimension, got ", x.describe());
  RL_CHECK(x.size(-1) > 0, Value, op, ": x (", x.describe(), ") has an empty last dimension: nothing to normalize over");
  check_shape(op, "gamma", gamma, {x.size(-1)});
  RL_CHECK(std::isfinite(eps) && eps > 0, Value, op, ": eps must be finite and positive, got ", eps);
  if (x.is_cpu()) check_cpu_float32(op, {{"x", &x}});
  return RL_DISPATCH(x, rmsnorm_forward(x, gamma, eps));
}

Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
                        const Tensor& residual, Tensor* y) {
  const char* op = "rmsnorm_backward";
  check_same(op, {{"dy", &dy}, {"x", &x}, {"gamma", &gamma}}, true);
  check_shape(op, "dy", dy, x.shape());
  check_shape(op, "gamma", gamma, {x.size(-1)});
  const int64_t rows = leading_rows(x.shape());
  check_dtype(op, "rstd", rstd, DType::Float32);
  RL_CHECK(rstd.numel() == rows, Value, op, ": rstd (", rstd.describe(), ") must have one entry per row of x (",
           rows, ")");
  check_shape(op, "dgamma", dgamma, {x.size(-1)});
  check_writable(op, "dgamma", dgamma);
  check_same(op, {{"x", &x}, {"dgamma", &dgamma}, {"rstd", &rstd}}, false);
  if (x.is_cpu()) check_cpu_float32(op, {{"x", &x}, {"dgamma", &dgamma}});
  check_norm_backward_residual(op, x, residual);
  return RL_DISPATCH(x, rmsnorm_backward(dy, x, gamma, rstd, dgamma, residual, y));
}

}  // namespace ringloom
