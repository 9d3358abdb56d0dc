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

using FreeList = std::multimap<size_t, void*>;  // rounded size -> block

struct Block {
  size_t size;  // rounded
  int pool;     // 0: the shared cache; > 0: a CUDA Graph's private pool
};

struct DevicePool {
  std::mutex mu;
  FreeList free_blocks;                 // the shared cache
  std::map<void*, Block> live;          // handed out now
  std::map<int, FreeList> private_free; // per private pool: its cached blocks
  std::map<int, size_t> private_bytes;  // per private pool: bytes it owns (live or cached)
  int capture_pool = 0;                 // the pool a running capture allocates from, or 0
  int next_pool = 1;
  AllocatorStats stats;
};

DevicePool& pool(int device) {
  static DevicePool pools[64];
  return pools[device];
}

// Best fit among cached blocks of at most twice a small request, or an eighth more than a
// large one (>= 1 MiB). Blocks are never split, so a block handed out is memory in use: a
// loose bound lets a small activation take a block a larger one needs next, and a training
// step, which requests the same sizes every step, then keeps meeting sizes the cache cannot
// serve (cudaMalloc, and more memory held) for several steps instead of one.
bool take_fit(FreeList& list, size_t size, void** ptr, size_t* got) {
  auto it = list.lower_bound(size);
  const size_t slack = size < (1u << 20) ? size : size / 8;
  if (it == list.end() || it->first > size + slack) return false;
  *ptr = it->second;
  *got = it->first;
  list.erase(it);
  return true;
}

void release_cached(DevicePool& p) {
  for (auto& [size, ptr] : p.free_blocks) {
    cudaFree(ptr);
    p.stats.reserved_bytes -= size;
  }
  p.free_blocks.clear();
}

// A fresh block from cudaMalloc. Outside a capture an out-of-memory releases the shared
// cache and tries once more; during a capture it cannot (cudaFree synchronises, which a
// capture forbids), so it fails and the capture is aborted.
void* malloc_block(DevicePool& p, size_t nbytes, size_t size, int device) {
  DeviceGuard g(device);
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err != cudaSuccess && p.capture_pool == 0) {
    cudaGetLastError();  // clear the error state
    release_cached(p);
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail(ErrorKind::Runtime, "CUDA out of memory allocating ", nbytes, " bytes on cuda:", device, " (",
         p.stats.allocated_bytes, " bytes in use",
         p.capture_pool ? "; during CUDA Graph capture, where the cache cannot be released)" : ")");
  }
  p.stats.reserved_bytes += size;
  p.stats.num_cuda_mallocs++;
  return ptr;
}

// While capturing: the capture pool's own blocks, then shared cached blocks, then a fresh
// cudaMalloc; the last two join the pool. cudaMalloc is not a stream operation, so the
// graph does not record it; it is legal because captures run in relaxed mode (graph.cu),
// and the memory stays the graph's for its lifetime.
void* capture_alloc(DevicePool& p, size_t nbytes, size_t size, int device, size_t* got) {
  void* ptr = nullptr;
  if (take_fit(p.private_free[p.capture_pool], size, &ptr, got)) return ptr;
  if (!take_fit(p.free_blocks, size, &ptr, got)) {
    ptr = malloc_block(p, nbytes, size, device);
    *got = size;
  }
  p.private_bytes[p.capture_pool] += *got;
  return ptr;
}
}  // namespace

void* cached_alloc(size_t nbytes, int device) {
  DevicePool& p = pool(device);
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(p.mu);
  void* ptr = nullptr;
  size_t got = size;
  if (p.capture_pool != 0) {
    ptr = capture_alloc(p, nbytes, size, device, &got);
  } else if (!take_fit(p.free_blocks, size, &ptr, &got)) {
    ptr = malloc_block(p, nbytes, size, device);
    got = size;
  }
  p.live[ptr] = Block{got, p.capture_pool};
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
  Block b = it->second;
  p.live.erase(it);
  p.stats.allocated_bytes -= b.size;
  // A shared block freed during capture was used by the captured work (its last user is
  // in the graph), so a replay touches it again: it becomes the graph's.
  if (b.pool == 0 && p.capture_pool != 0) {
    b.pool = p.capture_pool;
    p.private_bytes[b.pool] += b.size;
  }
  if (b.pool == 0) p.free_blocks.emplace(b.size, ptr);
  else p.private_free[b.pool].emplace(b.size, ptr);
}

AllocatorStats allocator_stats(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  AllocatorStats s = p.stats;
  s.private_pool_bytes = 0;
  for (const auto& [id, bytes] : p.private_bytes) s.private_pool_bytes += bytes;
  return s;
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
  RL_CHECK(p.capture_pool == 0, Runtime, "empty_cache: cuda:", device,
           " is capturing a CUDA Graph (cudaFree and device synchronisation are not allowed then)");
  DeviceGuard g(device);
  cudaDeviceSynchronize();
  release_cached(p);
}

int create_private_pool(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  const int id = p.next_pool++;
  p.private_free[id];
  p.private_bytes[id] = 0;
  return id;
}

void begin_capture_allocations(int device, int pool_id) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  RL_CHECK(p.capture_pool == 0, Runtime, "CUDA Graph capture: cuda:", device, " is already capturing (pool ",
           p.capture_pool, "); captures on one device cannot nest");
  RL_CHECK(p.private_bytes.count(pool_id), Value, "CUDA Graph capture: unknown private pool ", pool_id);
  p.capture_pool = pool_id;
}

void end_capture_allocations(int device) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  p.capture_pool = 0;
}

void release_private_pool(int device, int pool_id) {
  DevicePool& p = pool(device);
  std::lock_guard<std::mutex> lock(p.mu);
  auto fl = p.private_free.find(pool_id);
  if (fl == p.private_free.end()) return;
  for (auto& [size, ptr] : fl->second) p.free_blocks.emplace(size, ptr);
  p.private_free.erase(fl);
  for (auto& [ptr, b] : p.live)
    if (b.pool == pool_id) b.pool = 0;
  p.private_bytes.erase(pool_id);
  if (p.capture_pool == pool_id) p.capture_pool = 0;
}

void* pinned_host_alloc(size_t nbytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaHostAlloc(&p, nbytes > 0 ? nbytes : 1, cudaHostAllocDefault));
  return p;
}

void pinned_host_free(void* ptr) {
  if (ptr) cudaFreeHost(ptr);  // no throw: called from destructors
}

}  // namespace ringloom::cuda
