#include "ops/layernorm.h"

#include <algorithm>
#include <cmath>

#include "ops/dispatch.h"
#include "ops/norm_checks.h"

namespace ringloom {

std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                     float eps) {
  const char* op = "layernorm_forward";
  check_same(op, {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}}, true);
  check_dtype_in(op, "x", x, {DType::Float32, DType::BFloat16});
  RL_CHECK(x.dim() >= 1, Value, op, ": x must have at least 1 dimension, got ", x.describe());
  RL_CHECK(x.size(-1) > 0, Value, op, ": x (", x.describe(), ") has an empty last dimension: nothing to normalize over");
  check_shape(op, "gamma", gamma, {x.size(-1)});
  check_shape(op, "beta", beta, {x.size(-1)});
  RL_CHECK(std::isfinite(eps) && eps > 0, Value, op, ": eps must be finite and positive, got ", eps);
  if (x.is_cpu()) check_cpu_float32(op, {{"x", &x}});
  return RL_DISPATCH(x, layernorm_forward(x, gamma, beta, eps));
}

Tensor layernorm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                          const Tensor& rstd, Tensor& dgamma, Tensor& dbeta, const Tensor& residual,
                          const Tensor& beta, Tensor* y) {
  const char* op = "layernorm_backward";
  check_same(op, {{"dy", &dy}, {"x", &x}, {"gamma", &gamma}}, true);
  check_shape(op, "dy", dy, x.shape());
  check_shape(op, "gamma", gamma, {x.size(-1)});
  const int64_t rows = leading_rows(x.shape());
  check_dtype(op, "mean", mean, DType::Float32);
  check_dtype(op, "rstd", rstd, DType::Float32);
  RL_CHECK(mean.numel() == rows && rstd.numel() == rows, Value, op, ": mean (", mean.describe(), ") and rstd (",
           rstd.describe(), ") must have one entry per row of x (", rows, ")");
  check_shape(op, "dgamma", dgamma, {x.size(-1)});
  check_shape(op, "dbeta", dbeta, {x.size(-1)});
  check_writable(op, "dgamma", dgamma);
  check_writable(op, "dbeta", dbeta);
  check_same(op, {{"x", &x}, {"dgamma", &dgamma}, {"dbeta", &dbeta}, {"mean", &mean}, {"rstd", &rstd}}, false);
  if (x.is_cpu()) check_cpu_float32(op, {{"x", &x}, {"dgamma", &dgamma}, {"dbeta", &dbeta}});
  check_norm_backward_residual(op, x, residual);
  RL_CHECK(!y || beta.defined(), Value, op, ": writing the forward output y needs beta");
  if (beta.defined()) {
    check_same(op, {{"x", &x}, {"beta", &beta}}, true);
    check_shape(op, "beta", beta, {x.size(-1)});
  }
  return RL_DISPATCH(x, layernorm_backward(dy, x, gamma, mean, rstd, dgamma, dbeta, residual, beta, y));
}

}  // namespace ringloom
