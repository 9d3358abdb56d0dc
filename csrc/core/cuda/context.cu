#include "core/cuda/context.h"

#include <mutex>
#include <vector>

#include "core/cuda/check.h"

namespace ringloom::cuda {

namespace {
constexpr int kMaxDevices = 64;
constexpr size_t kWorkspaceBytes = 32ull << 20;  // cuBLASLt on Hopper wants 32 MiB

struct DeviceState {
  std::once_flag init;
  cudaStream_t stream = nullptr;
  cudaStream_t override_stream = nullptr;
  bool has_override = false;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  int sms = 0;
};

DeviceState& state(int device) {
  static DeviceState states[kMaxDevices];
  RL_CHECK(device >= 0 && device < kMaxDevices, Value, "CUDA device index ", device, " out of range");
  DeviceState& s = states[device];
  std::call_once(s.init, [&] {
    DeviceGuard g(device);
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&s.lt));
    CUDA_CHECK(cudaMalloc(&s.workspace, kWorkspaceBytes));
    CUDA_CHECK(cudaDeviceGetAttribute(&s.sms, cudaDevAttrMultiProcessorCount, device));
  });
  return s;
}
}  // namespace

DeviceGuard::DeviceGuard(int device) {
  CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) CUDA_CHECK(cudaSetDevice(device));
}
DeviceGuard::~DeviceGuard() {
  int cur = -1;
  if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_ && prev_ >= 0) cudaSetDevice(prev_);
}

cudaStream_t current_stream(int device) {
  DeviceState& s = state(device);
  return s.has_override ? s.override_stream : s.stream;
}

void set_current_stream(int device, cudaStream_t stream) {
  DeviceState& s = state(device);
  s.override_stream = stream;
  s.has_override = stream != nullptr;
}

cublasLtHandle_t cublaslt_handle(int device) { return state(device).lt; }
void* cublaslt_workspace(int device) { return state(device).workspace; }
size_t cublaslt_workspace_bytes() { return kWorkspaceBytes; }
int sm_count(int device) { return state(device).sms; }

}  // namespace ringloom::cuda
