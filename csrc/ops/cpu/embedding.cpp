// TODO(helper): replaced by the real implementation.
#include "ops/embedding.h"

namespace ringloom::cpu {
Tensor embedding_forward(const Tensor&, const Tensor&, const Tensor&) { fail(ErrorKind::NotImplemented, "embedding"); }
void embedding_backward(const Tensor&, const Tensor&, Tensor&, Tensor&) { fail(ErrorKind::NotImplemented, "embedding"); }
}  // namespace ringloom::cpu
