// Linear: y = x W^T + b with W [out, in] (ops/matmul.h). A building block of the layers,
// not a Layer itself: it holds parameters, the owning layer saves the activations.
#pragma once
#include <string>
#include <vector>

#include "layers/layer.h"

namespace ringloom::layers {

class Linear {
 public:
  Linear() = default;
  // `name` prefixes the parameter names: "<name>.weight", "<name>.bias".
  Linear(const std::string& name, int64_t in, int64_t out, bool bias, DType dtype, Device device);

  // residual, when defined, is added in the GEMM (y = x W^T + b + residual).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;
  Tensor backward_input(const Tensor& dy) const;
  // dW += dy^T x, db += sum over rows of dy (= with accumulate false).
  void backward_weight(const Tensor& dy, const Tensor& x, bool accumulate = true);
  void append_params(std::vector<Param>& out) const;

  const Param& weight() const { return weight_; }
  bool has_bias() const { return bias_.value.defined(); }

 private:
  Param weight_;
  Param bias_;  // undefined tensors when there is no bias
};

}  // namespace ringloom::layers
