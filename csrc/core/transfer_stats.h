// Counts of the bytes Tensor copies move between host memory and a device (Tensor::copy_from,
// which every .to(), .cpu() and host<->device copy_ goes through). Process-wide, atomic.
// Tests read them to show that a GPU step keeps its gradients on the device; the copies
// that collectives or kernels make internally (CUDA IPC, NCCL) never touch the host.
#pragma once
#include <cstdint>

namespace ringloom {

struct HostTransferStats {
  uint64_t to_host_bytes = 0, to_host_copies = 0;      // device -> host
  uint64_t from_host_bytes = 0, from_host_copies = 0;  // host -> device
};

HostTransferStats host_transfer_stats();
void reset_host_transfer_stats();

}  // namespace ringloom
