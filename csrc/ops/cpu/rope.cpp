// TODO(helper): replaced by the real implementation.
#include "ops/rope.h"

namespace ringloom::cpu {
void rope_apply(Tensor&, int64_t, float, int64_t, bool) { fail(ErrorKind::NotImplemented, "x"); }
}  // namespace ringloom::cpu
