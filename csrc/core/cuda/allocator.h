// Caching device allocator: cudaMalloc is slow and synchronising, so blocks are kept after
// free and reused (PyTorch's and llm.c's approach). No cudaMalloc/cudaFree happens inside a
// steady-state training step once the cache is warm. Blocks are reused in stream order on
// the device's compute stream; memory handed to another stream must be synchronised by the
// user of that stream (the communication code does this).
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
};
AllocatorStats allocator_stats(int device);
void reset_peak_stats(int device);
// Returns every cached (free) block to the driver.
void empty_cache(int device);

}  // namespace ringloom::cuda
