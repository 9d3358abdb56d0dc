// Token (+ learned position) embedding.
//   forward:  out[b, t, :] = wte[ids[b, t], :] + wpe[t, :]      (wpe optional: LLaMA has none)
//   backward: dwte[ids[b, t], :] += dout[b, t, :];  dwpe[t, :] += sum_b dout[b, t, :]
// ids are int32 [B, T]. An id outside [0, V) or T > max positions raises ValueError.
// Backward is deterministic on every device (no float atomics in an unspecified order).
//
// Vocabulary-parallel form (tensor parallelism): wte holds rows [vocab_start,
// vocab_start + V_r) of the full table. An id outside that slice contributes a zero token
// row (wpe is still added) and no wte gradient; summing the R slices' outputs gives the
// full embedding (the wpe term must then come from one slice only).
#pragma once
#include "core/tensor.h"

namespace ringloom {

Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe);
// Accumulates into dwte and (if defined) dwpe.
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe);
Tensor embedding_shard_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t vocab_start);
void embedding_shard_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t vocab_start);

namespace cpu {
Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe);
Tensor embedding_shard_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t vocab_start);
void embedding_shard_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t vocab_start);
}  // namespace cpu
namespace cuda {
Tensor embedding_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe);
void embedding_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe);
Tensor embedding_shard_forward(const Tensor& ids, const Tensor& wte, const Tensor& wpe, int64_t vocab_start);
void embedding_shard_backward(const Tensor& ids, const Tensor& dout, Tensor& dwte, Tensor& dwpe, int64_t vocab_start);
}  // namespace cuda

}  // namespace ringloom
