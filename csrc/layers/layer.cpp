#include "layers/layer.h"

#include <algorithm>

namespace ringloom::layers {

Param make_param(const std::string& name, const Shape& shape, DType dtype, Device device, bool decay) {
  Param p;
  p.name = name;
  p.value = Tensor::zeros(shape, dtype, device);
  p.grad = Tensor::zeros(shape, DType::Float32, device);
  p.decay = decay;
  return p;
}

void Layer::zero_grad() {
  for (Param& p : params()) p.grad.zero_();
  replace_grads_ = false;
}

std::vector<int> sorted_slots(std::vector<int> keys) {
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace ringloom::layers
