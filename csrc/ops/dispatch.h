// Routes an op to its CPU or CUDA implementation by the device of a tensor. Validation
// happens before this, in the op's entry point (csrc/ops/<op>.cpp).
#pragma once
#include "core/check.h"

#ifdef RINGLOOM_WITH_CUDA
#define RL_DISPATCH(t, call) ((t).is_cuda() ? ::ringloom::cuda::call : ::ringloom::cpu::call)
#else
// Without the CUDA backend no tensor can live on a GPU (Tensor::empty refuses).
#define RL_DISPATCH(t, call) (::ringloom::cpu::call)
#endif
