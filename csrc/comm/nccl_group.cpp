// NCCL backend (see nccl_group.h). Compiled only with RINGLOOM_WITH_NCCL.
#ifdef RINGLOOM_WITH_NCCL
#include "comm/nccl_group.h"

#include <cstring>
#include <thread>

#include "core/cuda/check.h"
#include "core/cuda/context.h"

#define NCCL_CHECK(expr)                                                                                  \
  do {                                                                                                    \
    ncclResult_t r_ = (expr);                                                                             \
    if (r_ != ncclSuccess && r_ != ncclInProgress)                                                        \
      ::ringloom::fail(::ringloom::ErrorKind::Runtime, "NCCL error ", ncclGetErrorString(r_), " in ", #expr, \
                       " at ", __FILE__, ":", __LINE__);                                                  \
  } while (0)

namespace ringloom::comm {

namespace {

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::Float32: return ncclFloat32;
    case DType::BFloat16: return ncclBfloat16;
    case DType::Float16: return ncclFloat16;
    case DType::Int32: return ncclInt32;
    case DType::Int64: return ncclInt64;
    case DType::UInt8: return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  return ncclSum;
}

}  // namespace

// ---- NcclWork ----

NcclWork::NcclWork(std::shared_ptr<NcclGroup> group, std::string op, cudaEvent_t done)
    : group_(std::move(group)), op_(std::move(op)), done_(done) {}

NcclWork::~NcclWork() { cudaEventDestroy(done_); }

bool NcclWork::is_completed() {
  cudaError_t e = cudaEventQuery(done_);
  if (e == cudaErrorNotReady) return false;
  CUDA_CHECK(e);
  return true;
}

bool NcclWork::wait_for(double seconds) {
  // NCCL kernels spin on the GPU until their peers arrive; the host polls so that a dead
  // or stuck peer turns into an error here (after aborting the communicator, which ends
  // the spinning kernels) instead of a hang.
  const Deadline d = seconds < 0 ? Deadline::max() : deadline_after(seconds);
  const Deadline hard = deadline_after(group_->timeout());
  auto sleep = std::chrono::microseconds(20);
  for (;;) {
    if (is_completed()) return true;
    group_->check_async(op_, true);
    const auto now = Clock::now();
    if (now >= hard) {
      group_->abort();
      fail(ErrorKind::Timeout, "ringloom.distributed: ", op_, " [nccl] on rank ", group_->rank(),
           " did not complete within the group timeout of ", group_->timeout(),
           " s (a peer is stuck or dead); the communicator was aborted");
    }
    if (now >= d) return false;
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(2000));
  }
}

// ---- NcclGroup ----

NcclGroup::NcclGroup(StoreClient& store, const std::string& name, int rank, int size, int device, double timeout_s)
    : rank_(rank), size_(size), device_(device), timeout_s_(timeout_s) {
  cuda::DeviceGuard guard(device);
  ncclUniqueId id;
  const std::string key = "nccl/" + name + "/id";
  if (rank == 0) {
    NCCL_CHECK(ncclGetUniqueId(&id));
    store.set(key, std::string(reinterpret_cast<const char*>(&id), sizeof id));
  } else {
    std::string v = store.get(key, timeout_s);
    RL_CHECK(v.size() == sizeof id, Runtime, "ringloom.distributed: nccl group '", name, "' on rank ", rank,
             ": the unique id in the store has ", v.size(), " bytes, expected ", sizeof id);
    std::memcpy(&id, v.data(), sizeof id);
  }
  NCCL_CHECK(ncclCommInitRank(&comm_, size, id, rank));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  barrier_buf_ = Tensor::zeros({1}, DType::Int32, Device::cuda(device));
}

NcclGroup::~NcclGroup() {
  cuda::DeviceGuard guard(device_);
  if (comm_) {
    if (aborted_) ncclCommAbort(comm_);
    else ncclCommDestroy(comm_);
  }
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclGroup::abort() {
  if (!aborted_ && comm_) {
    aborted_ = true;
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
}

void NcclGroup::check_async(const std::string& op, bool do_abort) {
  RL_CHECK(!aborted_, Runtime, "ringloom.distributed: ", op, " [nccl] on rank ", rank_,
           ": the communicator was aborted after an earlier error");
  ncclResult_t r = ncclSuccess;
  NCCL_CHECK(ncclCommGetAsyncError(comm_, &r));
  if (r != ncclSuccess && r != ncclInProgress) {
    if (do_abort) abort();
    fail(ErrorKind::Runtime, "ringloom.distributed: ", op, " [nccl] on rank ", rank_, ": ", ncclGetErrorString(r),
         " (a peer failed or the network broke); the communicator was aborted");
  }
}

void NcclGroup::check_tensor(const char* op, const Tensor& t) const {
  RL_CHECK(t.defined() && t.is_cuda() && t.device().index == device_, Value, "ringloom.distributed: ", op,
           " [nccl]: ", t.defined() ? t.describe() : std::string("undefined tensor"), " must be on cuda:", device_);
}

template <typename Launch>
std::shared_ptr<NcclWork> NcclGroup::run(const std::string& op, Launch launch) {
  check_async(op, true);
  cuda::DeviceGuard guard(device_);
  cudaStream_t compute = cuda::current_stream(device_);
  cudaEvent_t ready, done;
  CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(ready, compute));
  CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
  cudaEventDestroy(ready);  // safe: destruction is deferred until the event completes
  launch();
  CUDA_CHECK(cudaEventRecord(done, stream_));
  CUDA_CHECK(cudaStreamWaitEvent(compute, done, 0));
  return std::make_shared<NcclWork>(shared_from_this(), op, done);
}

std::shared_ptr<NcclWork> NcclGroup::all_reduce(const Tensor& t, ReduceOp op) {
  check_tensor("all_reduce", t);
  RL_CHECK(op != ReduceOp::Avg || is_floating(t.dtype()), Value,
           "ringloom.distributed: all_reduce [nccl]: op='avg' needs a floating dtype, got ", t.describe());
  return run("all_reduce", [&] {
    NCCL_CHECK(ncclAllReduce(t.data(), t.data(), size_t(t.numel()), nccl_dtype(t.dtype()), nccl_op(op), comm_, stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  check_tensor("reduce_scatter", out);
  check_tensor("reduce_scatter", in);
  RL_CHECK(out.dtype() == in.dtype() && in.numel() == out.numel() * size_, Value,
           "ringloom.distributed: reduce_scatter [nccl]: input ", in.describe(), " must hold ", size_,
           " x output ", out.describe());
  return run("reduce_scatter", [&] {
    NCCL_CHECK(ncclReduceScatter(in.data(), out.data(), size_t(out.numel()), nccl_dtype(out.dtype()), nccl_op(op),
                                 comm_, stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::all_gather(const Tensor& out, const Tensor& in) {
  check_tensor("all_gather", out);
  check_tensor("all_gather", in);
  RL_CHECK(out.dtype() == in.dtype() && out.numel() == in.numel() * size_, Value,
           "ringloom.distributed: all_gather [nccl]: output ", out.describe(), " must hold ", size_, " x input ",
           in.describe());
  return run("all_gather", [&] {
    NCCL_CHECK(ncclAllGather(in.data(), out.data(), size_t(in.numel()), nccl_dtype(in.dtype()), comm_, stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::broadcast(const Tensor& t, int src) {
  check_tensor("broadcast", t);
  RL_CHECK(src >= 0 && src < size_, Index, "ringloom.distributed: broadcast [nccl]: src=", src, " is not in 0..",
           size_ - 1);
  return run("broadcast", [&] {
    NCCL_CHECK(ncclBroadcast(t.data(), t.data(), size_t(t.numel()), nccl_dtype(t.dtype()), src, comm_, stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::send(const Tensor& t, int dst) {
  check_tensor("send", t);
  RL_CHECK(dst >= 0 && dst < size_ && dst != rank_, Index, "ringloom.distributed: send [nccl]: dst=", dst,
           " must be another rank in 0..", size_ - 1);
  return run("send", [&] {
    NCCL_CHECK(ncclSend(t.data(), size_t(t.numel()), nccl_dtype(t.dtype()), dst, comm_, stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::recv(const Tensor& t, int src) {
  check_tensor("recv", t);
  RL_CHECK(src >= 0 && src < size_ && src != rank_, Index, "ringloom.distributed: recv [nccl]: src=", src,
           " must be another rank in 0..", size_ - 1);
  return run("recv", [&] {
    NCCL_CHECK(ncclRecv(t.data(), size_t(t.numel()), nccl_dtype(t.dtype()), src, comm_, stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::barrier() {
  return run("barrier", [&] {
    NCCL_CHECK(ncclAllReduce(barrier_buf_.data(), barrier_buf_.data(), 1, ncclInt32, ncclSum, comm_, stream_));
  });
}

}  // namespace ringloom::comm
#endif  // RINGLOOM_WITH_NCCL
