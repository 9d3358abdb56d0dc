// Registers the CUDA DeviceBackend with the core at load time.
#include "core/backend.h"
#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/context.h"
#include "core/cuda/graph.h"

namespace ringloom::cuda {

namespace {
int device_count() {
  int n = 0;
  // No driver or no device is not an error: the build simply has no GPU to use.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// A CUDA Graph replays device work only: a copy that touches host memory (and waits for
// it) inside a captured region would be lost or break the capture, so it is refused.
void refuse_during_capture(int device, const char* what) {
  RL_CHECK(!stream_is_capturing(device), Runtime, what, " on cuda:", device,
           " while a CUDA Graph is being captured: a captured step cannot read or write host memory or wait "
           "for the device (read results after replay instead)");
}

void copy(void* dst, const void* src, size_t nbytes, int kind, int device) {
  DeviceGuard g(device);
  if (kind != 2) refuse_during_capture(device, kind == 0 ? "host-to-device copy" : "device-to-host copy");
  const cudaMemcpyKind k = kind == 0 ? cudaMemcpyHostToDevice : kind == 1 ? cudaMemcpyDeviceToHost : cudaMemcpyDefault;
  cudaStream_t s = current_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, k, s));
  // Host memory may be pageable and freed right after: copies that touch the host complete
  // before returning.
  if (kind != 2) CUDA_CHECK(cudaStreamSynchronize(s));
}

void memset(void* dst, int value, size_t nbytes, int device) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaMemsetAsync(dst, value, nbytes, current_stream(device)));
}

void synchronize(int device) {
  DeviceGuard g(device);
  refuse_during_capture(device, "synchronize");
  CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
}

const DeviceBackend kBackend = [] {
  DeviceBackend b;
  b.alloc = [](size_t n, int d) { return cached_alloc(n, d); };
  b.free = [](void* p, size_t n, int d) { cached_free(p, n, d); };
  b.copy = copy;
  b.memset = memset;
  b.synchronize = synchronize;
  b.device_count = device_count;
  return b;
}();

struct Registration {
  Registration() { register_backend(DeviceType::CUDA, &kBackend); }
} registration;
}  // namespace

}  // namespace ringloom::cuda
