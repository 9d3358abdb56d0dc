// TODO(helper): replaced by the real implementation.
#include "ops/adamw.h"

namespace ringloom::cpu {
void adamw_step(const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<float>&, const std::vector<Tensor>&, const Tensor&, const AdamWConfig&) { fail(ErrorKind::NotImplemented, "x"); }
Tensor grad_norm(const std::vector<Tensor>&) { fail(ErrorKind::NotImplemented, "x"); }
}  // namespace ringloom::cpu
