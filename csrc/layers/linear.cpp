#include "layers/linear.h"

#include "ops/matmul.h"

namespace ringloom::layers {

Linear::Linear(const std::string& name, int64_t in, int64_t out, bool bias, DType dtype, Device device) {
  weight_ = make_param(name + ".weight", {out, in}, dtype, device, /*decay=*/true);
  if (bias) bias_ = make_param(name + ".bias", {out}, dtype, device, /*decay=*/false);
}

Tensor Linear::forward(const Tensor& x, const Tensor& residual) const {
  return matmul_forward(x, weight_.value, bias_.value, residual);
}

Tensor Linear::backward_input(const Tensor& dy) const { return matmul_backward_input(dy, weight_.value); }

void Linear::backward_weight(const Tensor& dy, const Tensor& x, bool accumulate) {
  matmul_backward_weight(dy, x, weight_.grad, bias_.grad, accumulate);
}

void Linear::append_params(std::vector<Param>& out) const {
  out.push_back(weight_);
  if (has_bias()) out.push_back(bias_);
}

}  // namespace ringloom::layers
