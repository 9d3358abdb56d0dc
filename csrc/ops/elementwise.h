// Small elementwise ops the layers need between the big ones.
//   add(a, b) = a + b;  add_(a, b): a += b (residual accumulation);  scale_(a, s): a *= s
#pragma once
#include "core/tensor.h"

namespace ringloom {

Tensor add(const Tensor& a, const Tensor& b);
void add_(Tensor& a, const Tensor& b);
void scale_(Tensor& a, float s);

namespace cpu {
void add_out(const Tensor& a, const Tensor& b, Tensor& out);
void scale_(Tensor& a, float s);
}  // namespace cpu
namespace cuda {
void add_out(const Tensor& a, const Tensor& b, Tensor& out);
void scale_(Tensor& a, float s);
}  // namespace cuda

}  // namespace ringloom
