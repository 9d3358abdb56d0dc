// The measured table behind the auto attention backend (ops/attention_backend.h).
// Written by benchmarks/tune_attention_auto.py; re-measure there rather than edit.
// Measured on NVIDIA H200, torch 2.11.0+cu130, commit 1276fae, 2026-12-03 17:28:20;
// candidates ours, cudnn; bf16, MHA, B x T = 16384 tokens, H x D = 2048.
// ours at D64/D128 ran the flash kernels.
// Per row: the fastest backend for the forward and for the backward, with the times (ms)
// of every candidate as fwd/bwd.
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
    {64, true, 512, "cudnn", "cudnn"},  // ours 0.193/0.695, cudnn 0.132/0.518
    {64, true, 1024, "cudnn", "cudnn"},  // ours 0.299/1.087, cudnn 0.204/0.698
    {64, true, 2048, "cudnn", "cudnn"},  // ours 0.519/1.863, cudnn 0.356/1.063
    {64, true, 4096, "cudnn", "cudnn"},  // ours 0.982/3.407, cudnn 0.670/1.846
    {64, false, 512, "cudnn", "cudnn"},  // ours 0.274/1.013, cudnn 0.186/0.617
    {64, false, 1024, "cudnn", "cudnn"},  // ours 0.480/1.782, cudnn 0.333/0.974
    {64, false, 2048, "cudnn", "cudnn"},  // ours 0.925/3.342, cudnn 0.614/1.692
    {64, false, 4096, "cudnn", "cudnn"},  // ours 1.792/6.433, cudnn 1.254/3.214
    {128, true, 512, "cudnn", "cudnn"},  // ours 0.178/0.597, cudnn 0.100/0.404
    {128, true, 1024, "cudnn", "cudnn"},  // ours 0.285/0.893, cudnn 0.155/0.549
    {128, true, 2048, "cudnn", "cudnn"},  // ours 0.510/1.503, cudnn 0.277/0.898
    {128, true, 4096, "cudnn", "cudnn"},  // ours 0.965/2.696, cudnn 0.522/1.435
    {128, false, 512, "cudnn", "cudnn"},  // ours 0.254/0.807, cudnn 0.130/0.504
    {128, false, 1024, "cudnn", "cudnn"},  // ours 0.455/1.382, cudnn 0.250/0.820
    {128, false, 2048, "cudnn", "cudnn"},  // ours 0.866/2.518, cudnn 0.460/1.428
    {128, false, 4096, "cudnn", "cudnn"},  // ours 1.678/4.842, cudnn 0.907/2.667
};

}  // namespace ringloom::attention_auto
