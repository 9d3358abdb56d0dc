// The measured table behind the auto attention backend (ops/attention_backend.h).
// Written by benchmarks/tune_attention_auto.py; re-measure there rather than edit.
// These rows: fwd+bwd of bench_attention.py on NVIDIA H200, torch 2.11.0+cu130, main 14c691f
// (TFLOP/s ours vs our cuDNN backend), the same winner entered for both directions.
#pragma once

namespace ringloom::attention_auto {

struct Row {
  int head_dim;
  bool causal;
  int seq_len;
  const char* forward;   // a backend name (parse_attention_backend)
  const char* backward;
};

inline constexpr Row kTable[] = {
    {64, true, 1024, "cudnn", "cudnn"},    // ours 145, cudnn 168
    {128, true, 4096, "cudnn", "cudnn"},   // ours 266, cudnn 453
    {128, false, 4096, "cudnn", "cudnn"},  // ours 297, cudnn 522
};

}  // namespace ringloom::attention_auto
