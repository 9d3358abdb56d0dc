// TODO(cuda helper): replaced by the real kernels.
#include "ops/embedding.h"

namespace ringloom::cuda {
Tensor embedding_forward(const Tensor&, const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
void embedding_backward(const Tensor&, const Tensor&, Tensor&, Tensor&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
}  // namespace ringloom::cuda
