// TODO(cuda helper): replaced by the real kernels.
#include "ops/matmul.h"

namespace ringloom::cuda {
Tensor matmul_forward(const Tensor&, const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
Tensor matmul_backward_input(const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
void matmul_backward_weight(const Tensor&, const Tensor&, Tensor&, Tensor&, bool) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
}  // namespace ringloom::cuda
