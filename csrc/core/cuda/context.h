// Per-device CUDA state: the compute stream every op launches on, the cuBLASLt handle and
// its workspace. Ops call these with the device index of their tensors.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace ringloom::cuda {

// Makes `device` current for the calling thread and restores the previous one on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// The stream ops on `device` are issued to. Default: a non-blocking stream made per device;
// set_current_stream overrides it (CUDA Graph capture, communication overlap).
cudaStream_t current_stream(int device);
void set_current_stream(int device, cudaStream_t stream);

cublasLtHandle_t cublaslt_handle(int device);
// A cuBLASLt workspace of workspace_bytes() on `device`, allocated once.
void* cublaslt_workspace(int device);
size_t cublaslt_workspace_bytes();

int sm_count(int device);

}  // namespace ringloom::cuda
