// Rotary position embedding (Su et al. 2021), "rotate half" layout (as the Hugging Face
// LLaMA checkpoints use): for position t and pair i in [0, D/2),
//   theta_i = base^(-2i/D),  c = cos(t theta_i), s = sin(t theta_i)
//   y[i] = x[i] c - x[i + D/2] s,   y[i + D/2] = x[i + D/2] c + x[i] s
// Applied in place to the first n_rot_heads heads of x[B, T, H, D] (for packed qkv:
// Hq + Hkv, the query and key heads). Backward is the inverse rotation (s -> -s).
// pos_offset shifts positions (generation with a cache).
#pragma once
#include "core/tensor.h"

namespace ringloom {

void rope_forward(Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset);
void rope_backward(Tensor& dx, int64_t n_rot_heads, float base, int64_t pos_offset);

namespace cpu {
void rope_apply(Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset, bool inverse);
}  // namespace cpu
namespace cuda {
void rope_apply(Tensor& x, int64_t n_rot_heads, float base, int64_t pos_offset, bool inverse);
}  // namespace cuda

}  // namespace ringloom
