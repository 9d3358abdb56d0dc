#include "core/cuda/allocator.h"

#include <map>
#include <mutex>

#include "core/cuda/check.h"
#include "core/cuda/context.h"

namespace ringloom::cuda {

namespace {
// Sizes are rounded so that blocks are reusable across slightly different requests:
// 512 B granularity below 1 MiB, 2 MiB above (large activations and weights).
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  const size_t g = n < (1u << 20) ? 512 : (2u << 20);
  return (n + g - 1) / g * g;
}

struct DevicePool {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  std::map<void*, size_t> live;              // block -> rounded size
  AllocatorStats stats;
};

DevicePool& pool(int device) {
  static DevicePool pools[64];
  return pools[device];
}

void release_cached(DevicePool& p) {
  for (auto& [size, ptr] : p.free_blocks) {
    cudaFree(ptr);
    p.stats.reserved_bytes -= size;
  }
  p.free_blocks.clear();
}
}  // namespace

void* cached_alloc(size_t nbytes, int device) {
  DevicePool& p = pool(device);
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(p.mu);
  // Best fit among cached blocks no more than twice the request (bounds the waste).
  auto it = p.free_blocks.lower_bound(size);
  void* ptr = nullptr;
  size_t got = size;
  if (it != p.free_blocks.end() && it->first <= 2 * size) {
    ptr = it->second;
    got = it->first;
    p.free_blocks.erase(it);
  } else {
    DeviceGuard g(device);
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error state
      release_cached(p);   // give cached memory back and try once more
      err = cudaMalloc(&ptr, size);
      if (err != cudaSuccess) {
        cudaGetLastError();
        fail(ErrorKind::Runtime, "CUDA out of memory allocating ", nbytes, " bytes on cuda:", device, " (",
             p.stats.allocated_bytes, " bytes in use)");
      }
    }
    p.stats.reserved_bytes += size;
    p.stats.num_cuda_mallocs++;
  }
  p.live[ptr] = got;
  p.stats.allocated_bytes += got;
  if (p.stats.allocated_bytes > p.stats.peak_allocated_bytes) p.stats.peak_allocated_bytes = p.stats.allocated_bytes;
  return ptr;
}

void cached_free(void* ptr, size_t nbytes, int device) {
  if (!ptr) return;
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  auto it = p.live.find(ptr);
  if (it == p.live.end()) return;
  p.stats.allocated_bytes -= it->second;
  p.free_blocks.emplace(it->second, ptr);
  p.live.erase(it);
}

AllocatorStats allocator_stats(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  return p.stats;
}

void reset_peak_stats(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  p.stats.peak_allocated_bytes = p.stats.allocated_bytes;
  p.stats.num_cuda_mallocs = 0;
}

void empty_cache(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  DeviceGuard g(device);
  cudaDeviceSynchronize();
  release_cached(p);
}

}  // namespace ringloom::cuda
