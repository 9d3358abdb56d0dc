// The GPU transport of ProcessGroup's own algorithms (ring, tree, one-shot) for CUDA
// tensors when every rank of the group runs on one host: kernels that read the peers'
// buffers directly through CUDA IPC / peer access (comm/cuda/ipc_group.cpp). This header is
// free of CUDA so process_group.cpp compiles in CPU builds, where connect_ipc refuses.
#pragma once
#include <memory>
#include <string>

#include "comm/ipc_plan.h"
#include "comm/reduce.h"
#include "comm/socket.h"
#include "comm/store.h"
#include "core/tensor.h"

namespace ringloom::comm {

class IpcTransport {
 public:
  virtual ~IpcTransport() = default;
  virtual int device() const = 0;
  virtual size_t region_bytes() const = 0;

  // Each op launches on the transport's stream after the work already issued to the
  // device's compute stream, and the compute stream waits for it, so it behaves like any
  // other op in stream order; the host is not blocked. Returns what finish() waits on
  // (null when there is nothing to do). Must be called in the same order on every rank.
  virtual std::shared_ptr<void> all_reduce(const Tensor& t, ReduceOp op, IpcAlgo algo) = 0;
  virtual std::shared_ptr<void> reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) = 0;
  virtual std::shared_ptr<void> all_gather(const Tensor& out, const Tensor& in) = 0;
  virtual std::shared_ptr<void> broadcast(const Tensor& t, int src) = 0;

  // Blocks until the launched op finished, polling so that `d` holds; raises the op's
  // error (a peer that sent nothing within the timeout is named) or TimeoutError.
  virtual void finish(const std::shared_ptr<void>& launched, const std::string& op, Deadline d) = 0;
  // Makes every running and later kernel give up its waits (after an error, at shutdown).
  virtual void abort() = 0;
};

struct IpcSetup {
  std::unique_ptr<IpcTransport> transport;
  std::string refusal;  // why there is no transport (empty when there is one)
};

// Collective over the group (`rank` of `size`, this rank's GPU `device`): publishes this
// host's id, the GPU's PCI bus id and whether this process is an MPS client through the
// store under `name`, and when every rank is on this host with a GPU of its own (or ranks
// sharing a GPU are all MPS clients), allocates the buffer, exchanges IPC handles and
// opens the peers' buffers. Every rank reaches the same decision.
IpcSetup connect_ipc(StoreClient& store, const std::string& name, int rank, int size, int device, double timeout_s);

// This host's identity: RINGLOOM_HOST_ID if set, else the hostname and the kernel's boot id
// (two containers with the same hostname on different machines still differ).
std::string ipc_host_id();

}  // namespace ringloom::comm
