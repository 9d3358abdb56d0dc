// TODO(helper): replaced by the real implementation.
#include "ops/cross_entropy.h"

namespace ringloom::cpu {
Tensor cross_entropy_forward(const Tensor&, const Tensor&, int64_t) { fail(ErrorKind::NotImplemented, "x"); }
Tensor cross_entropy_forward_backward(Tensor&, const Tensor&, int64_t, float) { fail(ErrorKind::NotImplemented, "x"); }
}  // namespace ringloom::cpu
