// TODO(cuda helper): replaced by the real kernels.
#include "ops/activation.h"

namespace ringloom::cuda {
Tensor gelu_forward(const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
Tensor gelu_backward(const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
Tensor swiglu_forward(const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
Tensor swiglu_backward(const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
}  // namespace ringloom::cuda
