// Token (+ learned position) embedding.
//   forward:  out[b, t, :] = wte[ids[b, t], :] + wpe[t, :]      (wpe optional: LLaMA has none)
//   backward: dwte[ids[b, t], :] += dout[b, t, :];  dwpe[t, :] += sum_b dout[b, t, :]
// ids are int32 [B, T]. An id outside [0, V) or T > max positions raises ValueError.
// Backward is deterministic on every device (no float atomics in an unspecified order).
#pragma once
#include "core/tensor.h"

namespace ringloom {

Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe);
// Accumulates into dwte and (if defined) dwpe.
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe);

namespace cpu {
Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe);
}  // namespace cpu
namespace cuda {
Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe);
}  // namespace cuda

}  // namespace ringloom
