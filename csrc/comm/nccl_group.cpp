// NCCL backend (see nccl_group.h). Without RINGLOOM_WITH_NCCL only the refusing
// constructor is real (at the end of this file).
#include "comm/nccl_group.h"

#ifdef RINGLOOM_WITH_NCCL

#include <cstring>
#include <thread>
#include <vector>

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

// In a group of one rank avg is the identity, and NCCL is given sum (a copy) instead:
// NCCL's one-rank path runs avg through its own kernel (oneRankReduce, src/device/onerank.cu),
// which splits the elements between its blocks as alignUp(count / blocks, 16 B) each and
// leaves count - blocks * that unwritten when the floor loses elements (e.g. 4194305
// float32: 32 blocks of 131072, the last element never written). Sum and max with one rank
// are a plain copy there.
ncclRedOp_t nccl_op(ReduceOp op, int size) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return size == 1 ? ncclSum : ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  return ncclSum;
}

// NCCL needs a GPU of its own for every rank of a communicator (two ranks on one GPU make
// ncclCommInitRank fail with "invalid usage"): every rank publishes its GPU's PCI bus id
// and all refuse together, before NCCL is called, naming the ranks and the way out.
void refuse_shared_gpus(StoreClient& store, const std::string& name, int rank, int size, int device,
                        double timeout_s) {
  char bus[64] = {};
  CUDA_CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, device));
  const std::string prefix = "nccl/" + name + "/gpu/";
  store.set(prefix + std::to_string(rank), bus);
  std::vector<std::string> gpus;
  for (int q = 0; q < size; ++q) {
    gpus.push_back(store.get(prefix + std::to_string(q), timeout_s));
    for (int p = 0; p < q; ++p)
      RL_CHECK(gpus[size_t(p)] != gpus[size_t(q)], Value, "ringloom.distributed: nccl group '", name, "': ranks ", p,
               " and ", q, " use the same GPU (", gpus[size_t(q)],
               "); NCCL needs one GPU per rank. Ranks sharing a GPU: backend='ring' or 'tree' (CUDA IPC under the "
               "CUDA Multi-Process Service, else through host memory), or backend='auto'");
  }
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
  refuse_shared_gpus(store, name, rank, size, device, timeout_s);
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
    NCCL_CHECK(ncclAllReduce(t.data(), t.data(), size_t(t.numel()), nccl_dtype(t.dtype()), nccl_op(op, size_), comm_,
                             stream_));
  });
}

std::shared_ptr<NcclWork> NcclGroup::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  check_tensor("reduce_scatter", out);
  check_tensor("reduce_scatter", in);
  RL_CHECK(out.dtype() == in.dtype() && in.numel() == out.numel() * size_, Value,
           "ringloom.distributed: reduce_scatter [nccl]: input ", in.describe(), " must hold ", size_,
           " x output ", out.describe());
  return run("reduce_scatter", [&] {
    NCCL_CHECK(ncclReduceScatter(in.data(), out.data(), size_t(out.numel()), nccl_dtype(out.dtype()),
                                 nccl_op(op, size_), comm_, stream_));
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

#else  // no NCCL in this build

namespace ringloom::comm {

namespace {
[[noreturn]] void no_nccl() {
  fail(ErrorKind::NotImplemented, "ringloom.distributed: this build of ringloom has no NCCL backend (built without "
       "CUDA, or without NCCL's library and header beside the CUDA toolkit); use backend='ring', 'tree' or 'auto'");
}
}  // namespace

NcclWork::~NcclWork() = default;
bool NcclWork::wait_for(double) { no_nccl(); }
bool NcclWork::is_completed() { no_nccl(); }

NcclGroup::NcclGroup(StoreClient&, const std::string&, int, int, int, double) { no_nccl(); }
NcclGroup::~NcclGroup() = default;
void NcclGroup::abort() {}
void NcclGroup::check_async(const std::string&, bool) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::all_reduce(const Tensor&, ReduceOp) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::reduce_scatter(const Tensor&, const Tensor&, ReduceOp) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::all_gather(const Tensor&, const Tensor&) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::broadcast(const Tensor&, int) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::send(const Tensor&, int) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::recv(const Tensor&, int) { no_nccl(); }
std::shared_ptr<NcclWork> NcclGroup::barrier() { no_nccl(); }

}  // namespace ringloom::comm
#endif  // RINGLOOM_WITH_NCCL
