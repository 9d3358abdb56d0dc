// The NCCL backend: one NCCL communicator per group, created from a unique id that rank 0
// of the group publishes through the store. The classes exist in every build, so the
// extension binds the same names everywhere (and its type stubs fit every build); without
// RINGLOOM_WITH_NCCL the constructor raises and nothing else can be reached.
//
// Stream order instead of host waits: each op runs on the group's own communication
// stream, which first waits for the device's compute stream (so the op sees the values
// computed before it was issued); afterwards the compute stream waits for the op, so later
// kernels (and the caching allocator's reuse of these tensors' memory) come after it.
// The host only blocks in Work::wait_for, which polls the op's event and the communicator's
// asynchronous error until the deadline; a stuck op aborts the communicator and raises
// TimeoutError, a failed one RuntimeError, naming the op and the rank.
#pragma once
#ifdef RINGLOOM_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

#include <memory>
#include <string>

#include "comm/reduce.h"
#include "comm/store.h"
#include "core/tensor.h"

namespace ringloom::comm {

class NcclGroup;

class NcclWork {
 public:
#ifdef RINGLOOM_WITH_NCCL
  NcclWork(std::shared_ptr<NcclGroup> group, std::string op, cudaEvent_t done);
#endif
  ~NcclWork();
  bool wait_for(double seconds);  // as Work::wait_for
  bool is_completed();
  const std::string& op() const { return op_; }

 private:
  std::shared_ptr<NcclGroup> group_;
  std::string op_;
#ifdef RINGLOOM_WITH_NCCL
  cudaEvent_t done_;
#endif
};

class NcclGroup : public std::enable_shared_from_this<NcclGroup> {
 public:
  // Collective over the group: `rank` of `size`, all on CUDA device `device`.
  NcclGroup(StoreClient& store, const std::string& name, int rank, int size, int device, double timeout_s);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  double timeout() const { return timeout_s_; }

  std::shared_ptr<NcclWork> all_reduce(const Tensor& t, ReduceOp op);
  std::shared_ptr<NcclWork> reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op);
  std::shared_ptr<NcclWork> all_gather(const Tensor& out, const Tensor& in);
  std::shared_ptr<NcclWork> broadcast(const Tensor& t, int src);
  std::shared_ptr<NcclWork> send(const Tensor& t, int dst);
  std::shared_ptr<NcclWork> recv(const Tensor& t, int src);
  std::shared_ptr<NcclWork> barrier();

  // Checks the communicator's asynchronous error; aborts it (unblocking every op) on
  // `abort`. Throws with `op` named when there is an error.
  void check_async(const std::string& op, bool abort);
  void abort();

 private:
  template <typename Launch>
  std::shared_ptr<NcclWork> run(const std::string& op, Launch launch);
  void check_tensor(const char* op, const Tensor& t) const;

#ifdef RINGLOOM_WITH_NCCL
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
#endif
  int rank_ = 0, size_ = 0, device_ = 0;
  double timeout_s_ = 0;
  bool aborted_ = false;
  Tensor barrier_buf_;
};

}  // namespace ringloom::comm
