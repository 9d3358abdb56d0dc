// TODO(cuda helper): replaced by the real kernels.
#include "ops/rope.h"

namespace ringloom::cuda {
void rope_apply(Tensor&, int64_t, float, int64_t, bool) { fail(ErrorKind::NotImplemented, "not implemented on CUDA yet"); }
}  // namespace ringloom::cuda
