// TODO(helper): replaced by the real implementation.
#include "ops/activation.h"

namespace ringloom::cpu {
Tensor gelu_forward(const Tensor&) { fail(ErrorKind::NotImplemented, "x"); }
Tensor gelu_backward(const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "x"); }
Tensor swiglu_forward(const Tensor&) { fail(ErrorKind::NotImplemented, "x"); }
Tensor swiglu_backward(const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "x"); }
}  // namespace ringloom::cpu
