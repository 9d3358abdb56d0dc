// The scalar math of GELU (tanh form) and SwiGLU (ops/activation.h), one definition for
// the CPU loops (ops/cpu/activation.cpp) and the CUDA kernels (ops/cuda/activation.cu).
// Each function takes the logistic sigmoid as a functor, because the fast one differs by
// device: on the CPU one that the compiler vectorises (ops/cpu/sigmoid.h), on the GPU one
// on the __expf intrinsic.
//
// GELU is written through the identity 0.5 (1 + tanh u) = sigmoid(2u):
//   y = x sigmoid(2u),  dy/dx = s + 2 x s (1 - s) du/dx,  s = sigmoid(2u),
// since 0.5 (1 - tanh^2 u) = 2 s (1 - s): one exp instead of a tanh, and no 1 - tanh^2
// cancellation. In the far negative tail s is exactly 0, the right limit of both.
#pragma once

#ifdef __CUDACC__
#define RL_ACT_FN __host__ __device__ __forceinline__
// The functions are instantiated for a __device__-only sigmoid in CUDA code and a host one
// in CPU code; each instantiation is only ever called on its own side.
#define RL_ACT_SIDES _Pragma("nv_exec_check_disable")
#else
#define RL_ACT_FN inline
#define RL_ACT_SIDES
#endif

namespace ringloom::act {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

// 2u = 2 sqrt(2/pi) (x + 0.044715 x^3), the sigmoid's argument.
RL_ACT_FN float gelu_sigmoid_arg(float x) { return 2.0f * kSqrt2OverPi * (x + kGeluCubic * x * x * x); }

RL_ACT_SIDES
template <class Sigmoid>
RL_ACT_FN float gelu(float x, Sigmoid sigmoid) {
  return x * sigmoid(gelu_sigmoid_arg(x));
}

// The gradient, and beside it the forward value y = x s from the same s: a backward that
// also writes y (activation recomputation) gets it bitwise equal to gelu() for one write.
struct GeluGrad {
  float dx, y;
};

RL_ACT_SIDES
template <class Sigmoid>
RL_ACT_FN GeluGrad gelu_grad(float dy, float x, Sigmoid sigmoid) {
  const float s = sigmoid(gelu_sigmoid_arg(x));
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
  return {dy * (s + 2.0f * x * s * (1.0f - s) * du), x * s};
}

// y = silu(a) b = a sigmoid(a) b  (a: gate, b: up).
RL_ACT_SIDES
template <class Sigmoid>
RL_ACT_FN float swiglu(float a, float b, Sigmoid sigmoid) {
  return a * sigmoid(a) * b;
}

struct SwigluGrad {
  float da, db, y;  // y: the forward value, bitwise swiglu(a, b) (see GeluGrad)
};

// da = dy b s (1 + a (1 - s)),  db = dy a s,  s = sigmoid(a);  y = a s b.
RL_ACT_SIDES
template <class Sigmoid>
RL_ACT_FN SwigluGrad swiglu_grad(float dy, float a, float b, Sigmoid sigmoid) {
  const float s = sigmoid(a);
  return {dy * b * s * (1.0f + a * (1.0f - s)), dy * a * s, a * s * b};
}

}  // namespace ringloom::act

#undef RL_ACT_SIDES
#undef RL_ACT_FN
