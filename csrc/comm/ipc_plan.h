// The bookkeeping of the CUDA IPC transport (comm/cuda/ipc_group.*), kept free of CUDA so
// the host tests check it on any machine and the kernels use the very same arithmetic.
//
// Buffers. Every rank owns one communication buffer on its GPU, opened by its peers through
// cudaIpcOpenMemHandle: a flag header, then two slots (double buffering: round g uses slot
// g % 2), each with an "rs" region (partial sums, in the wire type: fp32 for bf16) and an
// "ag" region (final values or raw bytes, in the tensor's type). A collective cuts its data
// into segments (one per rank for ring all-reduce / reduce-scatter / all-gather, one in all
// for tree, one-shot and broadcast); a round moves `per_round` elements of every segment
// through the slot; within a round, channel c (CUDA block c) owns elements
// [c*per_channel, (c+1)*per_channel) of each segment's round slice, cut into sub-chunks of
// `sub_elems` that are signalled one at a time, so a consumer starts on the first sub-chunk
// while the producer is still writing the next (the pipeline).
//
// Flags (monotonic, never reset). ready[src][c] in a rank's header is written by rank src
// (channel c) when a sub-chunk is ready in src's buffer; ack[src][c] when src finished
// reading everybody's buffers for a round. Rounds are numbered across the whole life of a
// group (every rank runs the same ops in the same order, so they agree); a ready value is
// round << 16 | (step * nsub + sub + 1), which grows along each producer's program order
// across ops, so waits are `flag >= wanted` and stale values from earlier ops never pass.
// Before writing slot g % 2 a rank waits until every peer acked round g - 2, the last one
// that used the slot.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define RL_HD __host__ __device__ __forceinline__
#else
#define RL_HD inline
#endif

namespace ringloom::comm {

constexpr int kIpcMaxRanks = 16;
constexpr int kIpcMaxChannels = 32;
// Elements per alignment unit: chunk starts are multiples of this, so with 16-byte aligned
// tensors every chunk of every dtype (1 to 8 bytes) can move in 16-byte vectors.
constexpr size_t kIpcAlign = 16;
constexpr int kIpcStepBits = 16;  // ready value = round << 16 | step index

// The flag header at the start of each rank's buffer (device memory).
struct IpcFlags {
  uint64_t ready[kIpcMaxRanks][kIpcMaxChannels];
  uint64_t ack[kIpcMaxRanks][kIpcMaxChannels];
};
constexpr size_t kIpcHeaderBytes = 64 << 10;  // flags, padded so the slots start aligned
static_assert(sizeof(IpcFlags) <= kIpcHeaderBytes, "flag header too large");

enum class IpcAlgo : uint8_t { Ring = 0, Tree = 1, OneShot = 2 };
const char* ipc_algo_name(IpcAlgo a);

struct IpcPlan {
  int nseg = 0;                          // segments
  size_t off[kIpcMaxRanks + 1] = {};     // segment p: elements [off[p], off[p+1]) of the data
  size_t per_round = 0;                  // elements of each segment per round (multiple of kIpcAlign)
  size_t rounds = 0;                     // 0 for empty data
  int channels = 0;                      // CUDA blocks, 1..kIpcMaxChannels
  size_t per_channel = 0;                // elements of a segment's round slice per channel (aligned)
  size_t sub_elems = 0;                  // elements per signalled sub-chunk (aligned)
  int nsub = 0;                          // sub-chunks per channel slice
  int steps = 0;                         // signalled steps per round (for the flag range check)
};

// A piece of work: `count` elements at data index `elem` and region index `buf`.
struct IpcPiece {
  size_t elem;
  size_t buf;
  size_t count;
};

RL_HD size_t ipc_round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
RL_HD size_t ipc_min(size_t a, size_t b) { return a < b ? a : b; }
RL_HD int ipc_mod(int a, int n) { return ((a % n) + n) % n; }

// Round k, segment p, channel c, sub-chunk s. Pieces past the end of a segment are empty
// (count 0) but still signalled, so producer and consumer step through the same schedule.
RL_HD IpcPiece ipc_piece(const IpcPlan& p, size_t k, int seg, int c, int s) {
  const size_t len = p.off[seg + 1] - p.off[seg];
  const size_t chan_start = size_t(c) * p.per_channel;           // within the round slice
  const size_t start = chan_start + size_t(s) * p.sub_elems;      // within the round slice
  const size_t end = ipc_min(chan_start + ipc_min(size_t(s + 1) * p.sub_elems, p.per_channel), p.per_round);
  const size_t within = k * p.per_round + start;                  // within the segment
  size_t count = start < end ? end - start : 0;
  count = within < len ? ipc_min(count, len - within) : 0;
  return IpcPiece{p.off[seg] + within, size_t(seg) * p.per_round + start, count};
}

RL_HD uint64_t ipc_ready_value(uint64_t round, int step, int sub, int nsub) {
  return (round << kIpcStepBits) | uint64_t(step * nsub + sub + 1);
}

// The ack every peer must have given before round `round` may overwrite its slot.
RL_HD uint64_t ipc_ack_needed(uint64_t round) { return round > 2 ? round - 2 : 0; }

// Segments: n ranks' equal segments of `seg_len` (reduce-scatter, all-gather), or the
// all-reduce split (each segment rounded up to kIpcAlign elements, the last ones shorter,
// so every segment starts aligned), or one segment of `count` elements.
std::vector<size_t> ipc_equal_segments(size_t seg_len, int n);
std::vector<size_t> ipc_all_reduce_segments(size_t count, int n);

// A plan for segments `off` through regions of `region_elems` elements each. `sub_bytes`
// and `min_channel_bytes` (of `esize`-byte elements) set the sub-chunk size and how small a
// channel slice may get before fewer channels are used; `steps` is the number of signalled
// steps per round (the sub-chunk grows if steps * nsub would not fit the flag's step bits).
IpcPlan make_ipc_plan(const std::vector<size_t>& off, size_t region_elems, size_t esize, size_t sub_bytes,
                      size_t min_channel_bytes, int steps, int max_channels = kIpcMaxChannels);

// Why the IPC transport cannot serve this group (empty when it can): every rank evaluates
// it on the same published data, so all agree. hosts[r] / gpus[r] / mps[r]: rank r's host
// id, its GPU's PCI bus id, and whether its CUDA context is a client of the Multi-Process
// Service (empty: no rank is). Ranks may share a GPU only when all of them are MPS
// clients: their kernels then run side by side, as the IPC kernels' spinning on each
// other's flags needs; without MPS the GPU time-slices between processes.
std::string ipc_refusal(const std::vector<std::string>& hosts, const std::vector<std::string>& gpus,
                        const std::vector<bool>& mps, bool disabled);

// The most channels (CUDA blocks) an op may use in this group: every channel of every rank
// spins on its peers' flags, so all of them must be resident on their GPUs at once. Ranks
// sharing a GPU (under MPS) divide kIpcMaxChannels by the most ranks on any one GPU, so a
// shared GPU holds no more spinning blocks than a GPU of its own would. The same answer on
// every rank (all read the same bus ids), as the plans must agree.
int ipc_channel_limit(const std::vector<std::string>& gpus);

// The algorithm for a CUDA all-reduce of `nbytes` (the tensor's own bytes): one-shot up to
// `oneshot_max` bytes (and while the data fits one region), else tree when asked, else ring.
IpcAlgo choose_ipc_algo(bool tree, size_t nbytes, size_t oneshot_max, size_t region_bytes);

// Rounds are numbered from 1 over the group's life; an op of r rounds takes the next r.
class IpcRounds {
 public:
  uint64_t take(size_t rounds) {
    const uint64_t first = next_;
    next_ += rounds;
    return first;
  }
  uint64_t next() const { return next_; }

 private:
  uint64_t next_ = 1;
};

}  // namespace ringloom::comm
