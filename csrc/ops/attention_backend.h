// Which implementation the CUDA attention op runs (cuDNN's fused attention is a selectable
// backend that our kernel is measured against). A process-wide setting, read at
// every attention_forward/backward call on a GPU; the CPU op ignores it.
//   ours   our kernels (ops/cuda/attention/): on a compute capability 9.0 GPU the Hopper
//          kernels (wgmma/TMA, FlashAttention-3's design) for bf16 at head dim 64/128, else flash
//   cudnn  cuDNN's fused SDPA through the cuDNN frontend graph API (ops/cuda/attention/cudnn.cu):
//          bf16, head dim 64 or 128; anything else is an error naming the shape
//   auto   per shape and direction, the backend measured fastest: a table of timed shapes
//          (ops/attention_auto_table.h, written by benchmarks/tune_attention_auto.py on
//          the GPU) gives the winner of the nearest measured shape; bf16 only (ours
//          otherwise), and our kernels for a deterministic backward. `ours` in the table is
//          whatever `ours` runs on the measuring GPU (the Hopper kernels on an H200 at D64/D128)
// Both backends save/read the natural-log log-sum-exp [B, Hq, T], so a forward of one and
// a backward of the other are still correct (tests/gpu/test_attention_cudnn_gpu.py checks
// the two lse agree); auto may pick differently for forward and backward.
// Initial value: RINGLOOM_ATTENTION=ours|cudnn|auto in the environment, else ours.
// A layer may pin its own choice (TransformerBlock::set_attention_backend, a model's
// `attention` option): it runs its attention calls inside an AttentionBackendScope, a
// thread-local override of the process-wide setting for the scope's lifetime.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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
// The backends auto chooses among that this build has ("ours", then "cudnn" when built):
// the candidates benchmarks/tune_attention_auto.py times.
std::vector<std::string> attention_backend_candidates();
// auto's choice for a bf16 problem of head dim D, causal or not, sequence length T, in one
// direction: the winner recorded for the table row of the same D and causality whose T
// is nearest (in log2), Ours where the table has no such row.
AttentionBackend attention_auto_choice(int64_t head_dim, bool causal, int64_t seq_len, bool backward);

}  // namespace ringloom
