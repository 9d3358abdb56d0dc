// The measured table behind the auto attention backend (ops/attention_backend.h).
// Written by benchmarks/tune_attention_auto.py; re-measure there rather than edit.
// Measured on NVIDIA H200, torch 2.11.0+cu130, commit 2c618d6, 2026-12-04 03:12:32;
// candidates ours, cudnn; bf16, MHA, B x T = 16384 tokens, H x D = 2048.
// ours at D64/D128 ran the hopper kernels.
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
    {64, true, 512, "cudnn", "cudnn"},  // ours 0.189/0.669, cudnn 0.132/0.512
    {64, true, 1024, "cudnn", "cudnn"},  // ours 0.259/0.922, cudnn 0.209/0.691
    {64, true, 2048, "cudnn", "cudnn"},  // ours 0.402/1.428, cudnn 0.360/1.060
    {64, true, 4096, "cudnn", "cudnn"},  // ours 0.707/2.449, cudnn 0.669/1.882
    {64, false, 512, "cudnn", "cudnn"},  // ours 0.238/0.866, cudnn 0.183/0.610
    {64, false, 1024, "cudnn", "cudnn"},  // ours 0.386/1.389, cudnn 0.329/0.933
    {64, false, 2048, "cudnn", "cudnn"},  // ours 0.679/2.434, cudnn 0.640/1.708
    {64, false, 4096, "cudnn", "cudnn"},  // ours 1.241/4.521, cudnn 1.198/3.217
    {128, true, 512, "cudnn", "cudnn"},  // ours 0.138/0.510, cudnn 0.103/0.401
    {128, true, 1024, "cudnn", "cudnn"},  // ours 0.192/0.674, cudnn 0.166/0.554
    {128, true, 2048, "cudnn", "cudnn"},  // ours 0.299/1.032, cudnn 0.263/0.932
    {128, true, 4096, "cudnn", "cudnn"},  // ours 0.538/1.719, cudnn 0.517/1.488
    {128, false, 512, "cudnn", "cudnn"},  // ours 0.177/0.644, cudnn 0.142/0.502
    {128, false, 1024, "cudnn", "cudnn"},  // ours 0.280/0.998, cudnn 0.250/0.782
    {128, false, 2048, "cudnn", "cudnn"},  // ours 0.502/1.691, cudnn 0.459/1.480
    {128, false, 4096, "cudnn", "cudnn"},  // ours 0.933/3.063, cudnn 0.930/2.742
};

}  // namespace ringloom::attention_auto
