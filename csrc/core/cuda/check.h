// Every CUDA library call is wrapped so a failure becomes a ringloom::Error (a Python
// RuntimeError) naming the call, file and line, instead of an abort.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define CUDA_CHECK(expr)                                                                           \
  do {                                                                                             \
    cudaError_t err_ = (expr);                                                                     \
    if (err_ != cudaSuccess)                                                                       \
      ::ringloom::fail(::ringloom::ErrorKind::Runtime, "CUDA error ", cudaGetErrorString(err_), " in ", \
                       #expr, " at ", __FILE__, ":", __LINE__);                                    \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                           \
  do {                                                                                               \
    cublasStatus_t st_ = (expr);                                                                     \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                \
      ::ringloom::fail(::ringloom::ErrorKind::Runtime, "cuBLAS error ", cublasGetStatusString(st_), " in ", \
                       #expr, " at ", __FILE__, ":", __LINE__);                                      \
  } while (0)

// After a kernel launch: catches bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
