// Caching device allocator: cudaMalloc is slow and synchronising, so blocks are kept after
// free and reused (PyTorch's and llm.c's approach). No cudaMalloc/cudaFree happens inside a
// steady-state training step once the cache is warm. Blocks are reused in stream order on
// the device's compute stream; memory handed to another stream must be synchronised by the
// user of that stream (the communication code does this).
//
// CUDA Graphs (core/cuda/graph.h) need two more things from the allocator:
//  - during capture, blocks come from the graph's pool, then the shared cache, then a
//    cudaMalloc (legal in the relaxed capture mode graph.cu uses; never a cudaFree);
//  - memory the graph uses stays the graph's: a replay writes the same addresses the
//    capture recorded, so a block allocated or freed during capture must never be handed to
//    anyone else while the graph lives. Such blocks belong to the graph's private pool; when
//    freed they return to that pool, and only release_private_pool (the graph destroyed)
//    gives them back to the shared cache.
#pragma once
#include <cstddef>

namespace ringloom::cuda {

void* cached_alloc(size_t nbytes, int device);
void cached_free(void* ptr, size_t nbytes, int device);

struct AllocatorStats {
  size_t allocated_bytes = 0;       // handed out now
  size_t reserved_bytes = 0;        // held from cudaMalloc (allocated + cached)
  size_t peak_allocated_bytes = 0;
  size_t num_cuda_mallocs = 0;      // cudaMalloc calls since start (or reset)
  size_t private_pool_bytes = 0;    // held by CUDA Graphs' private pools (live or cached)
};
AllocatorStats allocator_stats(int device);
void reset_peak_stats(int device);
// Returns every cached (free) block of the shared cache to the driver.
void empty_cache(int device);

// ---- Pinned (page-locked) host memory ----
// For host buffers that device copies fill at full PCIe speed (checkpoint snapshots). Not
// cached: callers keep and reuse their buffers. The current device's context is used.
void* pinned_host_alloc(size_t nbytes);
void pinned_host_free(void* ptr);

// ---- CUDA Graph support ----
// A new private pool id (> 0) on `device`.
int create_private_pool(int device);
// From now until end_capture_allocations, allocations on `device` are served from `pool`
// (cached blocks only: its own free blocks first, then blocks moved over from the shared
// cache), and blocks freed on `device` join `pool`.
void begin_capture_allocations(int device, int pool);
void end_capture_allocations(int device);
// The graph is gone: the pool's free blocks return to the shared cache, and its live blocks
// will when they are freed.
void release_private_pool(int device, int pool);

}  // namespace ringloom::cuda
