// TODO(cuda helper): replaced by the real kernels.
#include "ops/attention.h"

namespace ringloom::cuda {
std::pair<Tensor, Tensor> attention_forward(const Tensor&, int64_t, int64_t, bool, float) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
Tensor attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, bool, float) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
}  // namespace ringloom::cuda
