// Device helpers of the IPC collectives: flag waits and signals at system scope, the
// element conversions (bf16 <-> fp32 wire), and the copy-and-reduce loop over a piece.
//
// Memory ordering (PTX memory model): a producer's threads write their data, meet at
// __syncthreads, then thread 0 issues a system-scope fence and a release store of the flag
// into the consumer's memory. The consumer's thread 0 spins on an acquire load of its local
// flag, then the block meets at __syncthreads before reading. Data in peer buffers is read
// with ld.global.cg (bypassing L1, which is not coherent with other GPUs' writes), so a slot
// re-read in a later round never returns stale lines.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "comm/cuda/ipc_kernels.h"

namespace ringloom::comm::cuda_ipc {

__device__ __forceinline__ uint64_t ld_acquire_sys(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void st_release_sys(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ IpcFlags* flags_of(const IpcKernelArgs& a, int rank) {
  return reinterpret_cast<IpcFlags*>(a.bufs[rank]);
}
template <typename W>
__device__ __forceinline__ W* rs_region(const IpcKernelArgs& a, int rank, uint64_t round) {
  return reinterpret_cast<W*>(a.bufs[rank] + kIpcHeaderBytes + (round & 1) * a.slot_bytes);
}
template <typename T>
__device__ __forceinline__ T* ag_region(const IpcKernelArgs& a, int rank, uint64_t round) {
  return reinterpret_cast<T*>(a.bufs[rank] + kIpcHeaderBytes + (round & 1) * a.slot_bytes + a.region_bytes);
}

__device__ __forceinline__ void ipc_record(const IpcKernelArgs& a, int code, int peer, int step, uint64_t round) {
  if (atomicCAS(a.fail_word, 0, code) == 0) {
    volatile IpcStatus* st = a.status;
    st->peer = peer;
    st->step = step;
    st->channel = int(blockIdx.x);
    st->round = round;
    __threadfence_system();
    st->code = code;
    __threadfence_system();
  }
}

// One thread's bounded spin until *flag >= want. False when it gave up (error recorded).
__device__ __forceinline__ bool ipc_spin(const IpcKernelArgs& a, const uint64_t* flag, uint64_t want, int code,
                                         int peer, int step, uint64_t round) {
  if (ld_acquire_sys(flag) >= want) return true;
  const uint64_t t0 = global_timer_ns();
  for (uint32_t spin = 1;; ++spin) {
    if (ld_acquire_sys(flag) >= want) return true;
    if ((spin & 127) == 0) {
      if (*a.abort != 0) {
        ipc_record(a, kIpcAborted, peer, step, round);
        return false;
      }
      if (*reinterpret_cast<volatile int*>(a.fail_word) != 0) return false;  // another block gave up
      if (global_timer_ns() - t0 > a.timeout_ns) {
        ipc_record(a, code, peer, step, round);
        return false;
      }
    }
  }
}

// Block-wide wait on one flag in our own header.
__device__ __forceinline__ bool ipc_wait(const IpcKernelArgs& a, const uint64_t* flag, uint64_t want, int peer,
                                         int step, uint64_t round) {
  int ok = 1;
  if (threadIdx.x == 0) ok = ipc_spin(a, flag, want, kIpcReadyTimeout, peer, step, round);
  return __syncthreads_and(ok);
}

// Before writing slot round % 2: every peer has acked round - 2 on every channel.
__device__ __forceinline__ bool ipc_wait_acks(const IpcKernelArgs& a, uint64_t round) {
  const uint64_t need = ipc_ack_needed(round);
  int ok = 1;
  if (need) {
    const IpcFlags* mine = flags_of(a, a.me);
    for (int i = threadIdx.x; ok && i < a.n * kIpcMaxChannels; i += blockDim.x) {
      const int q = i / kIpcMaxChannels, c = i % kIpcMaxChannels;
      if (q != a.me) ok = ipc_spin(a, &mine->ack[q][c], need, kIpcAckTimeout, q, -1, round);
    }
  }
  return __syncthreads_and(ok);
}

// After the block's writes of a step: tell up to two consumers (-1: none).
__device__ __forceinline__ void ipc_signal(const IpcKernelArgs& a, int to0, int to1, uint64_t value) {
  __syncthreads();
  if (threadIdx.x == 0 && (to0 >= 0 || to1 >= 0)) {
    __threadfence_system();
    if (to0 >= 0) st_release_sys(&flags_of(a, to0)->ready[a.me][blockIdx.x], value);
    if (to1 >= 0) st_release_sys(&flags_of(a, to1)->ready[a.me][blockIdx.x], value);
  }
}

__device__ __forceinline__ void ipc_signal_all(const IpcKernelArgs& a, uint64_t value) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence_system();
    for (int q = 0; q < a.n; ++q)
      if (q != a.me) st_release_sys(&flags_of(a, q)->ready[a.me][blockIdx.x], value);
  }
}

// End of a round: this channel read everything it needed from every peer's slot. Block 0
// also acks the channels this op does not use, so the next op's ack wait (over every
// channel) does not depend on how many channels this one had.
__device__ __forceinline__ void ipc_ack_round(const IpcKernelArgs& a, uint64_t round) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence_system();
    for (int q = 0; q < a.n; ++q) {
      if (q == a.me) continue;
      IpcFlags* f = flags_of(a, q);
      st_release_sys(&f->ack[a.me][blockIdx.x], round);
      if (blockIdx.x == 0)
        for (int c = a.plan.channels; c < kIpcMaxChannels; ++c) st_release_sys(&f->ack[a.me][c], round);
    }
  }
}

// ---- elements ----

// The wire type W a value of storage type T is reduced in: fp32 for bf16 (uint16_t bits).
__device__ __forceinline__ float to_wire(uint16_t x, float) { return __uint_as_float(uint32_t(x) << 16); }
template <typename T>
__device__ __forceinline__ T to_wire(T x, T) { return x; }

// fp32 -> bf16 bits, round to nearest even, NaN kept quiet (as core/dtype.h's CPU version).
__device__ __forceinline__ uint16_t from_wire(float v, uint16_t) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return uint16_t((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
template <typename T>
__device__ __forceinline__ T from_wire(T v, T) { return v; }

template <int kOp, typename W>
__device__ __forceinline__ W combine(W a, W b) {
  if constexpr (std::is_floating_point_v<W>) {
    if constexpr (kOp == kIpcMax) return (a != a || b != b) ? a + b : fmaxf(a, b);  // NaN wins, as on the CPU
    else return a + b;
  } else {
    using U = std::make_unsigned_t<W>;
    if constexpr (kOp == kIpcMax) return a > b ? a : b;
    else return W(U(a) + U(b));  // wraps modulo 2^bits, like the CPU reference
  }
}

template <typename W>
__device__ __forceinline__ W scaled(W v, float s) {
  if constexpr (std::is_floating_point_v<W>) return s == 1.0f ? v : v * s;
  else return v;
}

// V elements moved as 16-byte vectors (V * sizeof(T) is a multiple of 16).
template <typename T, int V>
struct alignas(16) Vec {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Vec<T, V> vload(const T* p) {
  static_assert(sizeof(T) * V % 16 == 0, "vector of whole 16-byte words");
  Vec<T, V> r;
  const uint4* q = reinterpret_cast<const uint4*>(p);
  uint4* d = reinterpret_cast<uint4*>(&r);
#pragma unroll
  for (int k = 0; k < int(sizeof(T) * V / 16); ++k) d[k] = __ldcg(q + k);
  return r;
}

template <typename T, int V>
__device__ __forceinline__ void vstore(T* p, const Vec<T, V>& x) {
  uint4* d = reinterpret_cast<uint4*>(p);
  const uint4* s = reinterpret_cast<const uint4*>(&x);
#pragma unroll
  for (int k = 0; k < int(sizeof(T) * V / 16); ++k) d[k] = s[k];
}

template <typename T>
__device__ __forceinline__ T sload(const T* p) {
  return *reinterpret_cast<const volatile T*>(p);
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Copy-and-reduce over one piece of `count` elements, the whole block taking part:
//   v = in[i] (widened; or srcs[0][i] when in is null) (op) srcs[1..][i]   (in the wire type W)
//   rs_out != null: rs_out[i] = v                                          (a partial sum)
//   else:           t = narrow(v * scale); ag_out[i] = t; out[i] = t       (the result; either may be null)
// Sources S are the wire type (partial sums) or the storage type (one-shot inputs).
template <typename T, typename W, int kOp, typename S>
__device__ __forceinline__ void reduce_piece(size_t count, const T* in, const S* const* srcs, int nsrc, W* rs_out,
                                             T* ag_out, T* out, float scale) {
  constexpr int V = 16 / sizeof(T);
  bool vec = (!in || aligned16(in)) && (!rs_out || aligned16(rs_out)) && (!ag_out || aligned16(ag_out)) &&
             (!out || aligned16(out));
  for (int s = 0; s < nsrc; ++s) vec = vec && aligned16(srcs[s]);
  size_t done = 0;
  if (vec) {
    const size_t nv = count / V;
    for (size_t i = size_t(threadIdx.x) * V; i < nv * V; i += size_t(blockDim.x) * V) {
      Vec<W, V> acc;
      int s0 = 0;
      if (in) {
        const Vec<T, V> x = vload<T, V>(in + i);
#pragma unroll
        for (int k = 0; k < V; ++k) acc.v[k] = to_wire(x.v[k], W{});
      } else {
        const Vec<S, V> x = vload<S, V>(srcs[0] + i);
#pragma unroll
        for (int k = 0; k < V; ++k) acc.v[k] = to_wire(x.v[k], W{});
        s0 = 1;
      }
      for (int s = s0; s < nsrc; ++s) {
        const Vec<S, V> x = vload<S, V>(srcs[s] + i);
#pragma unroll
        for (int k = 0; k < V; ++k) acc.v[k] = combine<kOp>(acc.v[k], to_wire(x.v[k], W{}));
      }
      if (rs_out) {
        vstore<W, V>(rs_out + i, acc);
      } else {
        Vec<T, V> t;
#pragma unroll
        for (int k = 0; k < V; ++k) t.v[k] = from_wire(scaled(acc.v[k], scale), T{});
        if (ag_out) vstore<T, V>(ag_out + i, t);
        if (out) vstore<T, V>(out + i, t);
      }
    }
    done = nv * V;
  }
  for (size_t i = done + threadIdx.x; i < count; i += blockDim.x) {
    W acc;
    int s0 = 0;
    if (in) {
      acc = to_wire(sload(in + i), W{});
    } else {
      acc = to_wire(sload(srcs[0] + i), W{});
      s0 = 1;
    }
    for (int s = s0; s < nsrc; ++s) acc = combine<kOp>(acc, to_wire(sload(srcs[s] + i), W{}));
    if (rs_out) {
      rs_out[i] = acc;
    } else {
      const T t = from_wire(scaled(acc, scale), T{});
      if (ag_out) ag_out[i] = t;
      if (out) out[i] = t;
    }
  }
}

// dst0[i] = dst1[i] = src[i] (either destination may be null).
template <typename T>
__device__ __forceinline__ void copy_piece(size_t count, const T* src, T* dst0, T* dst1) {
  constexpr int V = 16 / sizeof(T);
  size_t done = 0;
  if (aligned16(src) && (!dst0 || aligned16(dst0)) && (!dst1 || aligned16(dst1))) {
    const size_t nv = count / V;
    for (size_t i = size_t(threadIdx.x) * V; i < nv * V; i += size_t(blockDim.x) * V) {
      const Vec<T, V> x = vload<T, V>(src + i);
      if (dst0) vstore<T, V>(dst0 + i, x);
      if (dst1) vstore<T, V>(dst1 + i, x);
    }
    done = nv * V;
  }
  for (size_t i = done + threadIdx.x; i < count; i += blockDim.x) {
    const T x = sload(src + i);
    if (dst0) dst0[i] = x;
    if (dst1) dst1[i] = x;
  }
}

template <typename T>
__device__ __forceinline__ const T* at(const void* base, size_t index) {
  return static_cast<const T*>(base) + index;
}
template <typename T>
__device__ __forceinline__ T* at(void* base, size_t index) {
  return static_cast<T*>(base) + index;
}

}  // namespace ringloom::comm::cuda_ipc
