#include "ops/adamw.h"

#include <cmath>

#include "ops/dispatch.h"

namespace ringloom {

namespace {
void check_scalars(const char* op, const Tensor& scalars, Device dev) {
  check_dtype(op, "scalars", scalars, DType::Float32);
  check_writable(op, "scalars", scalars);
  RL_CHECK(scalars.numel() == 3 && scalars.device() == dev, Value, op,
           ": scalars must be a 3-element float32 tensor [lr, 1/bc1, 1/bc2] on ", dev.str(), ", got ",
           scalars.describe());
}

// Every hyper-parameter finite and in range: an infinite lr passes "lr >= 0" and turns
// every weight into -inf or NaN in one step, so finiteness is checked on its own.
void check_hyperparameters(const char* op, const AdamWConfig& cfg, bool with_eps) {
  RL_CHECK(cfg.step >= 1, Value, op, ": step must be >= 1 (bias correction), got ", cfg.step);
  RL_CHECK(std::isfinite(cfg.lr) && cfg.lr >= 0, Value, op, ": lr must be finite and >= 0, got lr=", cfg.lr);
  RL_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1, Value, op,
           ": beta1 and beta2 must be in [0, 1), got beta1=", cfg.beta1, " beta2=", cfg.beta2);
  if (!with_eps) return;
  RL_CHECK(std::isfinite(cfg.eps) && cfg.eps > 0, Value, op, ": eps must be finite and > 0, got eps=", cfg.eps);
  RL_CHECK(!std::isnan(cfg.max_norm), Value, op, ": max_norm is NaN (0 turns clipping off)");
}
}  // namespace

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
                const std::vector<Tensor>& v, const std::vector<float>& weight_decay,
                const std::vector<Tensor>& compute, const Tensor& grad_norm, const AdamWConfig& cfg) {
  const char* op = "adamw_step";
  const size_t n = params.size();
  RL_CHECK(grads.size() == n && m.size() == n && v.size() == n && weight_decay.size() == n, Value, op,
           ": params (", n, "), grads (", grads.size(), "), m (", m.size(), "), v (", v.size(),
           ") and weight_decay (", weight_decay.size(), ") must have the same length");
  RL_CHECK(compute.empty() || compute.size() == n, Value, op, ": compute must be empty or have ", n,
           " tensors, got ", compute.size());
  check_hyperparameters(op, cfg, true);
  for (size_t i = 0; i < n; ++i)
    RL_CHECK(std::isfinite(weight_decay[i]), Value, op, ": weight_decay[", i, "] must be finite, got ",
             weight_decay[i]);
  if (n == 0) return;
  const Device dev = params[0].device();
  for (size_t i = 0; i < n; ++i) {
    const std::string pi = str_cat("params[", i, "]");
    check_dtype(op, pi.c_str(), params[i], DType::Float32);
    check_dtype(op, "m", m[i], DType::Float32);
    check_dtype(op, "v", v[i], DType::Float32);
    check_dtype_in(op, "grads", grads[i], {DType::Float32, DType::BFloat16});
    check_writable(op, pi.c_str(), params[i]);
    check_writable(op, "m", m[i]);
    check_writable(op, "v", v[i]);
    RL_CHECK(params[i].device() == dev, Value, op, ": ", pi, " (", params[i].describe(), ") is not on ", dev.str());
    check_same(op, {{pi.c_str(), &params[i]}, {"grad", &grads[i]}, {"m", &m[i]}, {"v", &v[i]}}, false);
    RL_CHECK(grads[i].shape() == params[i].shape() && m[i].shape() == params[i].shape() &&
                 v[i].shape() == params[i].shape(),
             Value, op, ": grad/m/v of ", pi, " (", params[i].describe(), ") differ in shape: ",
             grads[i].describe(), ", ", m[i].describe(), ", ", v[i].describe());
    if (!compute.empty()) {
      check_dtype_in(op, "compute", compute[i], {DType::Float32, DType::BFloat16});
      check_writable(op, "compute", compute[i]);
      check_same(op, {{pi.c_str(), &params[i]}, {"compute", &compute[i]}}, false);
      RL_CHECK(compute[i].shape() == params[i].shape(), Value, op, ": compute[", i, "] (", compute[i].describe(),
               ") differs in shape from ", params[i].describe());
    }
    if (dev.is_cpu()) check_cpu_float32(op, {{"grad", &grads[i]}});
  }
  if (cfg.max_norm > 0) {
    check_dtype(op, "grad_norm", grad_norm, DType::Float32);
    RL_CHECK(grad_norm.numel() == 1 && grad_norm.device() == dev, Value, op,
             ": grad_norm must be a 1-element tensor on ", dev.str(), ", got ", grad_norm.describe());
  }
  if (cfg.scalars.defined()) check_scalars(op, cfg.scalars, dev);
  RL_DISPATCH(params[0], adamw_step(params, grads, m, v, weight_decay, compute, grad_norm, cfg));
}

Tensor grad_norm(const std::vector<Tensor>& grads) {
  const char* op = "grad_norm";
  RL_CHECK(!grads.empty(), Value, op, ": needs at least one tensor");
  for (const Tensor& g : grads) {
    check_dtype_in(op, "grad", g, {DType::Float32, DType::BFloat16});
    RL_CHECK(g.device() == grads[0].device(), Value, op, ": grads on different devices: ", g.describe(), " and ",
             grads[0].describe());
    if (g.is_cpu()) check_cpu_float32(op, {{"grad", &g}});
  }
  return RL_DISPATCH(grads[0], grad_norm(grads));
}

void adamw_write_scalars(const Tensor& scalars, const AdamWConfig& cfg) {
  const char* op = "adamw_write_scalars";
  RL_CHECK(scalars.defined(), Value, op, ": scalars is undefined");
  check_scalars(op, scalars, scalars.device());
  check_hyperparameters(op, cfg, false);
  RL_DISPATCH(scalars, adamw_write_scalars(scalars, cfg));
}

}  // namespace ringloom
