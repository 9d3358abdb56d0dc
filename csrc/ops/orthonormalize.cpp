#include "ops/orthonormalize.h"

#include "ops/dispatch.h"

namespace ringloom {

void orthonormalize_columns_(Tensor& p) {
  const char* op = "orthonormalize_columns_";
  check_defined(op, "p", p);
  check_dtype(op, "p", p, DType::Float32);
  check_dim(op, "p", p, 2);
  check_writable(op, "p", p);
  if (p.numel() == 0) return;
  RL_DISPATCH(p, orthonormalize_columns_(p));
}

}  // namespace ringloom
