#include "layers/layer.h"

#include <algorithm>
#include <utility>

#include "core/storage_swap.h"

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
  for (Param& p : params()) {
    restore_grad(p.grad, /*zero=*/false);
    p.grad.zero_();
  }
  replace_grads_ = false;
  on_zero_grad();
}

void Layer::release_grads() {
  for (Param& p : params()) storage_release(p.grad);
}

bool Layer::begin_grad_writes() {
  const bool accumulate = !std::exchange(replace_grads_, false);
  for (Param& p : params()) restore_grad(p.grad, accumulate);
  return accumulate;
}

void Layer::restore_grad(Tensor grad, bool zero) {
  if (storage_has_memory(grad)) return;
  storage_allocate(grad);
  if (zero) grad.zero_();
}

std::vector<int> sorted_slots(std::vector<int> keys) {
  std::sort(keys.begin(), keys.end());
  return keys;
}

}  // namespace ringloom::layers
