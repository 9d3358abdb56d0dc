// Pointwise activations.
// GELU, tanh approximation (Hendrycks & Gimpel 2016), as GPT-2 uses:
//   u = sqrt(2/pi) * (x + 0.044715 x^3),  y = 0.5 x (1 + tanh u)
//   dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2)
// SwiGLU (Shazeer 2020) on the packed gate|up projection x[..., 2F]: a = x[..., :F], b = x[..., F:]
//   y = silu(a) * b,  silu(a) = a * sigmoid(a)
//   da = dy * b * sigmoid(a) (1 + a (1 - sigmoid(a))),  db = dy * silu(a)
// A backward given `y` also writes the forward output into *y (a new tensor), bitwise what
// the forward returns: the backward reads x anyway, so activation recomputation (dropping
// the output after the forward) costs one write instead of a second pass over x.
#pragma once
#include "core/tensor.h"

namespace ringloom {

Tensor gelu_forward(const Tensor& x);
Tensor gelu_backward(const Tensor& dy, const Tensor& x, Tensor* y = nullptr);
Tensor swiglu_forward(const Tensor& x);                                         // [..., 2F] -> [..., F]
Tensor swiglu_backward(const Tensor& dy, const Tensor& x, Tensor* y = nullptr);  // -> [..., 2F]

namespace cpu {
Tensor gelu_forward(const Tensor& x);
Tensor gelu_backward(const Tensor& dy, const Tensor& x, Tensor* y);
Tensor swiglu_forward(const Tensor& x);
Tensor swiglu_backward(const Tensor& dy, const Tensor& x, Tensor* y);
}  // namespace cpu
namespace cuda {
Tensor gelu_forward(const Tensor& x);
Tensor gelu_backward(const Tensor& dy, const Tensor& x, Tensor* y);
Tensor swiglu_forward(const Tensor& x);
Tensor swiglu_backward(const Tensor& dy, const Tensor& x, Tensor* y);
}  // namespace cuda

}  // namespace ringloom
