// Argument checks shared by layernorm_backward and rmsnorm_backward.
#pragma once
#include "core/check.h"
#include "core/tensor.h"

namespace ringloom {

// The optional residual added to dx: x's dtype, device and shape.
inline void check_norm_backward_residual(const char* op, const Tensor& x, const Tensor& residual) {
  if (!residual.defined()) return;
  check_same(op, {{"x", &x}, {"residual", &residual}}, true);
  check_shape(op, "residual", residual, x.shape());
}

}  // namespace ringloom
