// TODO(helper): replaced by the real implementation.
#include "ops/attention.h"

namespace ringloom::cpu {
std::pair<Tensor, Tensor> attention_forward(const Tensor&, int64_t, int64_t, bool, float) { fail(ErrorKind::NotImplemented, "attn"); }
Tensor attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, bool, float) { fail(ErrorKind::NotImplemented, "attn"); }
}  // namespace ringloom::cpu
