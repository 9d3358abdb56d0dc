// Which implementation the CUDA attention op runs (DESIGN.md: cuDNN's fused attention is a
// selectable backend that our kernel is measured against). A process-wide setting, read at
// every attention_forward/backward call on a GPU; the CPU op ignores it.
//   ours   our kernels (ops/cuda/attention/): on a compute capability 9.0 GPU the Hopper
//          kernels (wgmma/TMA, FlashAttention-3's design) for bf16 at head dim 64/128, else flash
//   cudnn  cuDNN's fused SDPA through the cuDNN frontend graph API (ops/cuda/attention/cudnn.cu):
//          bf16, head dim 64 or 128; anything else is an error naming the shape
//   auto   cuDNN for bf16 at head dim 128 when it is built (its fwd+bwd measured 1.1-1.2x our
//          Hopper kernels' on an H200, ~1.75x the flash kernels' on an H100), ours otherwise
//          (the Hopper kernels measured 1.2-1.3x cuDNN at D64 causal fwd+bwd on an H200)
// Forward and backward pick the same way for the same shapes, and both save/read the
// natural-log log-sum-exp [B, Hq, T], so switching between a forward and its backward is
// still correct (tests/gpu/test_attention_cudnn_gpu.py checks the two lse agree).
// Initial value: RINGLOOM_ATTENTION=ours|cudnn|auto in the environment, else ours.
// A layer may pin its own choice (TransformerBlock::set_attention_backend, a model's
// `attention` option): it runs its attention calls inside an AttentionBackendScope, a
// thread-local override of the process-wide setting for the scope's lifetime.
#pragma once
#include <optional>
#include <string>

namespace ringloom {

enum class AttentionBackend { Ours, Cudnn, Auto };

void set_attention_backend(AttentionBackend b);
// The backend in effect on this thread: the innermost AttentionBackendScope's, else the
// process-wide setting.
AttentionBackend attention_backend();

class AttentionBackendScope {
 public:
  // nullopt: no override (the enclosing choice stays in effect).
  explicit AttentionBackendScope(std::optional<AttentionBackend> b);
  ~AttentionBackendScope();
  AttentionBackendScope(const AttentionBackendScope&) = delete;
  AttentionBackendScope& operator=(const AttentionBackendScope&) = delete;

 private:
  int saved_;
};

// "ours" | "cudnn" | "auto" <-> enum; an unknown name throws ValueError listing the three.
AttentionBackend parse_attention_backend(const std::string& name);
const char* attention_backend_name(AttentionBackend b);
// Whether this build contains the Hopper (sm_90a) attention kernels, which `ours` runs on
// compute capability 9.0 GPUs for bf16 at head dim 64 or 128.
bool hopper_attention_built();
// Whether this build contains the cuDNN backend (CUDA, cuDNN and the cudnn-frontend headers).
bool cudnn_attention_built();

}  // namespace ringloom
