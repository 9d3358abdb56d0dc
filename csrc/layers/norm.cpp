#include "layers/norm.h"

#include <tuple>

#include "ops/elementwise.h"
#include "ops/layernorm.h"
#include "ops/rmsnorm.h"

namespace ringloom::layers {

const char* norm_kind_name(NormKind k) { return k == NormKind::LayerNorm ? "layernorm" : "rmsnorm"; }

Norm::Norm(const std::string& name, NormKind kind, int64_t dim, float eps, DType dtype, Device device)
    : kind_(kind), eps_(eps) {
  RL_CHECK(eps > 0, Value, "Norm ", name, ": eps must be positive, got ", eps);
  gamma_ = make_param(name + ".weight", {dim}, dtype, device, /*decay=*/false);
  // Gain 1: the norm starts as the identity on normalised rows. Filled on the host and
  // copied so this works on any device and dtype.
  Tensor ones = Tensor::empty({dim}, DType::Float32);
  float* p = ones.data_as<float>();
  for (int64_t i = 0; i < dim; ++i) p[i] = 1.0f;
  gamma_.value.copy_from(ones.to(dtype).to(device));
  if (kind == NormKind::LayerNorm) beta_ = make_param(name + ".bias", {dim}, dtype, device, /*decay=*/false);
}

Tensor Norm::forward(const Tensor& x, NormSaved* saved) const {
  if (kind_ == NormKind::LayerNorm) {
    auto [y, mean, rstd] = layernorm_forward(x, gamma_.value, beta_.value, eps_);
    if (saved) *saved = {x, mean, rstd};
    return y;
  }
  auto [y, rstd] = rmsnorm_forward(x, gamma_.value, eps_);
  if (saved) *saved = {x, Tensor(), rstd};
  return y;
}

Tensor Norm::backward_input(const Tensor& dy, const NormSaved& s, NormGrads& grads, const Tensor& residual,
                            Tensor* y) const {
  grads.dgamma = Tensor::zeros(gamma_.grad.shape(), DType::Float32, gamma_.grad.device());
  if (kind_ == NormKind::LayerNorm) {
    grads.dbeta = Tensor::zeros(beta_.grad.shape(), DType::Float32, beta_.grad.device());
    return layernorm_backward(dy, s.x, gamma_.value, s.mean, s.rstd, grads.dgamma, grads.dbeta, residual,
                              beta_.value, y);
  }
  return rmsnorm_backward(dy, s.x, gamma_.value, s.rstd, grads.dgamma, residual, y);
}

void Norm::backward_weight(const NormGrads& grads, bool accumulate) {
  auto put = [&](Tensor& grad, const Tensor& g) {
    if (accumulate) add_(grad, g);
    else grad.copy_from(g);
  };
  put(gamma_.grad, grads.dgamma);
  if (kind_ == NormKind::LayerNorm) put(beta_.grad, grads.dbeta);
}

void Norm::append_params(std::vector<Param>& out) const {
  out.push_back(gamma_);
  if (kind_ == NormKind::LayerNorm) out.push_back(beta_);
}

}  // namespace ringloom::layers
