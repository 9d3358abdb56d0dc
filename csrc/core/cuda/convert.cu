// float32 <-> bfloat16 conversion on the device (round to nearest even, as __float2bfloat16).
#include <cuda_bf16.h>

#include "core/cuda/check.h"
#include "core/cuda/context.h"
#include "core/tensor.h"

namespace ringloom {

namespace {
__global__ void f32_to_bf16_kernel(const float* in, __nv_bfloat16* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}
__global__ void bf16_to_f32_kernel(const __nv_bfloat16* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}
}  // namespace

Tensor convert_dtype_cuda(const Tensor& src, DType dtype) {
  const int dev = src.device().index;
  Tensor out = Tensor::empty(src.shape(), dtype, src.device());
  const int64_t n = src.numel();
  if (n == 0) return out;
  cuda::DeviceGuard g(dev);
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, 65535));
  cudaStream_t s = cuda::current_stream(dev);
  if (src.dtype() == DType::Float32 && dtype == DType::BFloat16) {
    f32_to_bf16_kernel<<<blocks, threads, 0, s>>>(src.data_as<float>(), out.data_as<__nv_bfloat16>(), n);
  } else if (src.dtype() == DType::BFloat16 && dtype == DType::Float32) {
    bf16_to_f32_kernel<<<blocks, threads, 0, s>>>(src.data_as<__nv_bfloat16>(), out.data_as<float>(), n);
  } else {
    // Other conversions are rare (integer ids, checkpoints): go through the host.
    return src.to(Device::cpu()).to(dtype).to(src.device());
  }
  CUDA_CHECK_LAUNCH();
  return out;
}

}  // namespace ringloom
