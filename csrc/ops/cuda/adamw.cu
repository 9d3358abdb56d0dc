// TODO(cuda helper): replaced by the real kernels.
#include "ops/adamw.h"

namespace ringloom::cuda {
void adamw_step(const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<float>&, const std::vector<Tensor>&, const Tensor&, const AdamWConfig&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
Tensor grad_norm(const std::vector<Tensor>&) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
}  // namespace ringloom::cuda
