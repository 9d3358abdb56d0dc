// Plans, flag numbering and the set-up decision of the CUDA IPC transport (see ipc_plan.h).
#include "comm/ipc_plan.h"

#include <algorithm>

#include "core/error.h"

namespace ringloom::comm {

const char* ipc_algo_name(IpcAlgo a) {
  switch (a) {
    case IpcAlgo::Ring: return "ring";
    case IpcAlgo::Tree: return "tree";
    case IpcAlgo::OneShot: return "one-shot";
  }
  return "?";
}

std::vector<size_t> ipc_equal_segments(size_t seg_len, int n) {
  std::vector<size_t> off(size_t(n) + 1);
  for (int p = 0; p <= n; ++p) off[size_t(p)] = seg_len * size_t(p);
  return off;
}

std::vector<size_t> ipc_all_reduce_segments(size_t count, int n) {
  const size_t seg = ipc_round_up((count + size_t(n) - 1) / size_t(n), kIpcAlign);
  std::vector<size_t> off(size_t(n) + 1);
  for (int p = 0; p <= n; ++p) off[size_t(p)] = std::min(seg * size_t(p), count);
  return off;
}

IpcPlan make_ipc_plan(const std::vector<size_t>& off, size_t region_elems, size_t esize, size_t sub_bytes,
                      size_t min_channel_bytes, int steps, int max_channels) {
  RL_CHECK(off.size() >= 2 && off.size() <= size_t(kIpcMaxRanks) + 1, Value, "ipc plan: ", off.size() - 1,
           " segments (expected 1..", kIpcMaxRanks, ")");
  RL_CHECK(steps >= 1 && esize >= 1 && max_channels >= 1 && max_channels <= kIpcMaxChannels, Value,
           "ipc plan: bad steps/esize/channels");
  IpcPlan p;
  p.nseg = int(off.size()) - 1;
  p.steps = steps;
  size_t longest = 0;
  for (int s = 0; s <= p.nseg; ++s) {
    p.off[s] = off[size_t(s)];
    if (s > 0) {
      RL_CHECK(off[size_t(s)] >= off[size_t(s) - 1], Value, "ipc plan: segment offsets decrease");
      longest = std::max(longest, off[size_t(s)] - off[size_t(s) - 1]);
    }
  }
  const size_t a = kIpcAlign;
  if (longest == 0) {  // nothing to move: no rounds, but a well-formed plan
    p.per_round = p.per_channel = p.sub_elems = a;
    p.channels = p.nsub = 1;
    return p;
  }
  const size_t cap = region_elems / size_t(p.nseg) / a * a;
  RL_CHECK(cap >= a, Value, "ipc plan: a region of ", region_elems, " elements cannot hold ", p.nseg, " segments");
  p.per_round = std::min(ipc_round_up(longest, a), cap);
  p.rounds = (longest + p.per_round - 1) / p.per_round;
  const size_t min_ch = std::max(a, ipc_round_up(min_channel_bytes / esize, a));
  const size_t want = (p.per_round + min_ch - 1) / min_ch;
  p.channels = int(std::clamp<size_t>(want, 1, size_t(max_channels)));
  p.per_channel = ipc_round_up((p.per_round + size_t(p.channels) - 1) / size_t(p.channels), a);
  p.channels = int((p.per_round + p.per_channel - 1) / p.per_channel);
  p.sub_elems = std::min(p.per_channel, std::max(a, ipc_round_up(sub_bytes / esize, a)));
  p.nsub = int((p.per_channel + p.sub_elems - 1) / p.sub_elems);
  const size_t max_nsub = ((size_t(1) << kIpcStepBits) - 1) / size_t(steps);
  RL_CHECK(max_nsub >= 1, Value, "ipc plan: ", steps, " steps do not fit the flag's step field");
  if (size_t(p.nsub) > max_nsub) {  // fewer, larger sub-chunks so every step index fits
    p.sub_elems = ipc_round_up((p.per_channel + max_nsub - 1) / max_nsub, a);
    p.nsub = int((p.per_channel + p.sub_elems - 1) / p.sub_elems);
  }
  return p;
}

int ipc_channel_limit(const std::vector<std::string>& gpus) {
  size_t most = 1;
  for (const std::string& g : gpus) most = std::max(most, size_t(std::count(gpus.begin(), gpus.end(), g)));
  return std::max(1, kIpcMaxChannels / int(std::min(most, size_t(kIpcMaxChannels))));
}

std::string ipc_refusal(const std::vector<std::string>& hosts, const std::vector<std::string>& gpus,
                        const std::vector<bool>& mps, bool disabled) {
  const size_t n = hosts.size();
  if (disabled) return "disabled by RINGLOOM_IPC=0";
  if (n < 2) return "a group of one rank has nobody to exchange with";
  if (n > size_t(kIpcMaxRanks))
    return str_cat("the group has ", n, " ranks, more than the ", kIpcMaxRanks, " the IPC transport supports");
  RL_CHECK(gpus.size() == n, Value, "ipc_refusal: ", n, " hosts but ", gpus.size(), " GPUs");
  RL_CHECK(mps.empty() || mps.size() == n, Value, "ipc_refusal: ", n, " hosts but ", mps.size(), " MPS flags");
  for (size_t r = 1; r < n; ++r)
    if (hosts[r] != hosts[0])
      return str_cat("rank ", r, " runs on host '", hosts[r], "' and rank 0 on '", hosts[0],
                     "': CUDA IPC only connects the GPUs of one host");
  for (size_t r = 0; r < n; ++r) {
    if (gpus[r].empty()) return str_cat("rank ", r, " has no GPU");
    for (size_t q = 0; q < r; ++q) {
      if (gpus[q] != gpus[r] || (!mps.empty() && mps[q] && mps[r])) continue;
      const size_t without = !mps.empty() && mps[q] ? r : q;
      return str_cat("ranks ", q, " and ", r, " use the same GPU (", gpus[r],
                     ") and rank ", without, " is not a client of the CUDA Multi-Process Service (MPS): without "
                     "it the GPU time-slices between the processes and every flag wait of the IPC kernels takes "
                     "milliseconds. Start MPS (nvidia-cuda-mps-control -d) before the ranks, or give each rank a "
                     "GPU of its own");
    }
  }
  return "";
}

IpcAlgo choose_ipc_algo(bool tree, size_t nbytes, size_t oneshot_max, size_t region_bytes) {
  if (nbytes <= oneshot_max && nbytes <= region_bytes) return IpcAlgo::OneShot;
  return tree ? IpcAlgo::Tree : IpcAlgo::Ring;
}

}  // namespace ringloom::comm
