// The CUDA IPC transport (ipc_transport.h): set-up through the store, launches ordered with
// the compute stream, host waits with a deadline, tear-down. Kernels: ipc_ring.cu,
// ipc_tree.cu; bookkeeping: ipc_plan.h.
//
// Set-up (collective, keys under "ipc/<group>/"):
//   1. every rank publishes "info/<r>" = host id \n GPU PCI bus id \n MPS client (0/1), and
//      reads everyone's; ipc_refusal() on that data says whether IPC can serve the group
//      (same answer on every rank, so all fall back together). Ranks may share a GPU when
//      all of them are clients of the CUDA Multi-Process Service: CUDA's own answer,
//      cudaDevAttrMpsEnabled, says whether this process's contexts on the device go
//      through MPS (true when the MPS control daemon was running as the process first
//      touched the GPU). Their buffers are then opened by the other processes on the same
//      device through cudaIpcOpenMemHandle, which needs no peer access;
//   2. each rank allocates its buffer (cudaMalloc: IPC handles are per allocation, so not
//      from the caching allocator), zeroes the flags, publishes "handle/<r>";
//   3. each opens its peers' handles (cudaIpcMemLazyEnablePeerAccess), enables peer access
//      to the peers' GPUs it can see, and publishes "open/<r>" = "" or what failed; if any
//      rank failed, all release what they made and fall back, quoting that rank's error.
// Memory: RINGLOOM_IPC_BUFFER_BYTES (default 64 MiB) per rank and group, two slots of an rs
// and an ag region each (16 MiB regions by default).
#ifdef RINGLOOM_WITH_CUDA
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/algorithms.h"
#include "comm/cuda/ipc_kernels.h"
#include "comm/ipc_transport.h"
#include "core/cuda/check.h"
#include "core/cuda/context.h"

namespace ringloom::comm {

namespace {

using namespace cuda_ipc;

size_t env_bytes(const char* name, size_t dflt, size_t lo) {
  const char* e = std::getenv(name);
  if (!e || !*e) return dflt;
  const long long v = std::atoll(e);
  return v >= (long long)lo ? size_t(v) : dflt;
}

// Wire element size (partial sums of bf16 are fp32).
size_t wire_size(DType t) { return t == DType::BFloat16 ? 4 : dtype_size(t); }

struct Launched {
  cudaEvent_t done = nullptr;
  uint64_t first_round = 0, end_round = 0;
  ~Launched() {
    if (done) cudaEventDestroy(done);
  }
};

class IpcGroup final : public IpcTransport {
 public:
  IpcGroup(int rank, int size, int device, double timeout_s)
      : rank_(rank), size_(size), device_(device), timeout_s_(timeout_s) {
    const size_t total = env_bytes("RINGLOOM_IPC_BUFFER_BYTES", size_t(64) << 20, size_t(1) << 20);
    region_bytes_ = total / 4 / 4096 * 4096;
    slot_bytes_ = 2 * region_bytes_;
    sub_bytes_ = env_bytes("RINGLOOM_IPC_CHUNK_BYTES", size_t(64) << 10, 1024);
  }

  ~IpcGroup() override { release(); }

  int device() const override { return device_; }
  size_t region_bytes() const override { return region_bytes_; }

  // Step 2: the buffer and this process's private state. Returns the IPC handle bytes.
  std::string allocate() {
    cuda::DeviceGuard guard(device_);
    CUDA_CHECK(cudaMalloc(&mine_, kIpcHeaderBytes + 2 * slot_bytes_));
    CUDA_CHECK(cudaMemset(mine_, 0, kIpcHeaderBytes));
    CUDA_CHECK(cudaMalloc(&fail_word_, sizeof(int)));
    CUDA_CHECK(cudaMemset(fail_word_, 0, sizeof(int)));
    CUDA_CHECK(cudaHostAlloc(&host_, sizeof(HostWords), cudaHostAllocMapped));
    std::memset(host_, 0, sizeof(HostWords));
    CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&host_dev_), host_, 0));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaDeviceSynchronize());  // the zeroed flags are in place before any peer can see them
    cudaIpcMemHandle_t h;
    CUDA_CHECK(cudaIpcGetMemHandle(&h, mine_));
    bufs_[rank_] = mine_;
    return std::string(reinterpret_cast<const char*>(&h), sizeof h);
  }

  // Step 3: the peers' buffers, and peer access to the GPUs this process can see.
  void open(const std::vector<std::string>& handles, const std::vector<std::string>& gpus) {
    cuda::DeviceGuard guard(device_);
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      int dev = -1;
      if (cudaDeviceGetByPCIBusId(&dev, gpus[size_t(q)].c_str()) == cudaSuccess && dev != device_) {
        int can = 0;
        if (cudaDeviceCanAccessPeer(&can, device_, dev) == cudaSuccess && can) {
          const cudaError_t e = cudaDeviceEnablePeerAccess(dev, 0);
          RL_CHECK(e == cudaSuccess || e == cudaErrorPeerAccessAlreadyEnabled, Runtime,
                   "cudaDeviceEnablePeerAccess(", dev, ") failed: ", cudaGetErrorString(e));
        }
      }
      cudaGetLastError();  // clear what the probing above may have left
      RL_CHECK(handles[size_t(q)].size() == sizeof(cudaIpcMemHandle_t), Runtime, "rank ", q,
               " published no usable IPC handle");
      cudaIpcMemHandle_t h;
      std::memcpy(&h, handles[size_t(q)].data(), sizeof h);
      void* p = nullptr;
      const cudaError_t e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
      RL_CHECK(e == cudaSuccess, Runtime, "cudaIpcOpenMemHandle of rank ", q, "'s buffer (GPU ", gpus[size_t(q)],
               ") failed: ", cudaGetErrorString(e));
      bufs_[q] = static_cast<char*>(p);
    }
    max_channels_ = ipc_channel_limit(gpus);
    opened_ = true;
  }

  std::shared_ptr<void> all_reduce(const Tensor& t, ReduceOp op, IpcAlgo algo) override {
    const size_t count = size_t(t.numel()), ws = wire_size(t.dtype());
    IpcKernelArgs a;
    a.in = a.out = t.data();
    a.scale = op == ReduceOp::Avg ? 1.0f / float(size_) : 1.0f;
    if (algo == IpcAlgo::Ring) {
      a.plan = make_ipc_plan(ipc_all_reduce_segments(count, size_), region_bytes_ / ws, ws, sub_bytes_, 32 << 10,
                             2 * size_ - 1, max_channels_);
      a.first_step = 0;
      a.last_step = 2 * size_ - 2;
      return launch(a, [&](const IpcKernelArgs& x, cudaStream_t s) { launch_ipc_ring(t.dtype(), op, x, s); });
    }
    if (algo == IpcAlgo::Tree) {
      a.plan = make_ipc_plan({0, count}, region_bytes_ / ws, ws, sub_bytes_, 32 << 10, 2, max_channels_);
      for (int i = 0; i < 2; ++i) {
        const TreeNode nd = build_tree(size_, i)[size_t(rank_)];
        a.tree[i] = IpcTreeNode{nd.parent, {nd.child[0], nd.child[1]}};
      }
      return launch(a, [&](const IpcKernelArgs& x, cudaStream_t s) { launch_ipc_tree(t.dtype(), op, x, s); });
    }
    // One-shot: the inputs sit in the ag regions in their own type; no sub-chunks (one
    // signal per channel), channels of at least 8 KiB.
    const size_t es = dtype_size(t.dtype());
    a.plan = make_ipc_plan({0, count}, region_bytes_ / es, es, region_bytes_, 8 << 10, 1, max_channels_);
    return launch(a, [&](const IpcKernelArgs& x, cudaStream_t s) { launch_ipc_oneshot(t.dtype(), op, x, s); });
  }

  std::shared_ptr<void> reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    const size_t m = size_t(out.numel()), ws = wire_size(in.dtype());
    IpcKernelArgs a;
    a.plan = make_ipc_plan(ipc_equal_segments(m, size_), region_bytes_ / ws, ws, sub_bytes_, 32 << 10, size_,
                           max_channels_);
    a.in = in.data();
    a.out = out.data();
    a.out_sub = m * size_t(rank_);
    a.scale = op == ReduceOp::Avg ? 1.0f / float(size_) : 1.0f;
    a.first_step = 0;
    a.last_step = size_ - 1;
    return launch(a, [&](const IpcKernelArgs& x, cudaStream_t s) { launch_ipc_ring(in.dtype(), op, x, s); });
  }

  std::shared_ptr<void> all_gather(const Tensor& out, const Tensor& in) override {
    const size_t m = size_t(in.numel()), es = dtype_size(in.dtype());
    IpcKernelArgs a;
    a.plan = make_ipc_plan(ipc_equal_segments(m, size_), region_bytes_ / es, es, sub_bytes_, 32 << 10, size_,
                           max_channels_);
    a.in = in.data();
    a.out = out.data();
    a.in_sub = m * size_t(rank_);
    a.first_step = size_ - 1;
    a.last_step = 2 * size_ - 2;
    return launch(a, [&](const IpcKernelArgs& x, cudaStream_t s) { launch_ipc_ring_gather(es, x, s); });
  }

  std::shared_ptr<void> broadcast(const Tensor& t, int src) override {
    const size_t es = dtype_size(t.dtype());
    IpcKernelArgs a;
    a.plan = make_ipc_plan({0, size_t(t.numel())}, region_bytes_ / es, es, sub_bytes_, 32 << 10, 1, max_channels_);
    a.in = a.out = t.data();
    a.root = src;
    return launch(a, [&](const IpcKernelArgs& x, cudaStream_t s) { launch_ipc_broadcast(es, x, s); });
  }

  void finish(const std::shared_ptr<void>& launched, const std::string& op, Deadline d) override {
    if (!launched) return;
    auto* l = static_cast<Launched*>(launched.get());
    // The kernels time their own waits out after the group timeout and name the peer they
    // waited for; the host allows a little more, so that message normally wins and the
    // host deadline only catches kernels that never ran.
    const double grace = std::max(5.0, 0.1 * timeout_s_);
    d += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(grace));
    auto sleep = std::chrono::microseconds(10);
    for (;;) {
      const cudaError_t e = cudaEventQuery(l->done);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) CUDA_CHECK(e);
      if (Clock::now() >= d) {
        abort();
        // The kernels see the abort word at their next wait; give them a moment to leave.
        const Deadline leave_by = deadline_after(10.0);
        while (cudaEventQuery(l->done) == cudaErrorNotReady && Clock::now() < leave_by)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        fail(ErrorKind::Timeout, "ringloom.distributed: ", op, " on rank ", rank_, " did not complete within ",
             timeout_s_ + grace, " s (a peer is stuck or dead, or the GPU never ran it); the IPC kernels were aborted");
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::microseconds(1000));
    }
    const volatile IpcStatus& st = host_->status;
    if (st.code == kIpcOk || st.round < l->first_round || st.round >= l->end_round) return;
    const int peer = st.peer;
    switch (st.code) {
      case kIpcReadyTimeout:
        fail(ErrorKind::Timeout, "ringloom.distributed: ", op, " on rank ", rank_, ": peer rank ", peer,
             " signalled nothing for ", timeout_s_, " s (step ", st.step, ", channel ", st.channel,
             "): it is dead or stuck");
      case kIpcAckTimeout:
        fail(ErrorKind::Timeout, "ringloom.distributed: ", op, " on rank ", rank_, ": peer rank ", peer,
             " did not release the shared buffers within ", timeout_s_, " s: it is dead or stuck");
      default:
        fail(ErrorKind::Runtime, "ringloom.distributed: ", op, " on rank ", rank_,
             " was aborted (an earlier error or shut-down; waiting on peer rank ", peer, ")");
    }
  }

  void abort() override {
    std::lock_guard<std::mutex> l(mu_);
    aborted_ = true;
    if (host_) host_->abort = 1;
  }

 private:
  struct HostWords {
    IpcStatus status;
    int abort;
  };

  template <typename Kernel>
  std::shared_ptr<void> launch(IpcKernelArgs& a, Kernel kernel) {
    std::lock_guard<std::mutex> lock(mu_);
    RL_CHECK(!aborted_, Runtime, "ringloom.distributed: the IPC transport of rank ", rank_,
             " was aborted after an earlier error");
    if (a.plan.rounds == 0) return nullptr;
    cuda::DeviceGuard guard(device_);
    a.n = size_;
    a.me = rank_;
    for (int q = 0; q < size_; ++q) a.bufs[q] = bufs_[q];
    a.slot_bytes = slot_bytes_;
    a.region_bytes = region_bytes_;
    a.fail_word = fail_word_;
    a.status = &host_dev_->status;
    a.abort = &host_dev_->abort;
    a.timeout_ns = uint64_t(timeout_s_ * 1e9);
    auto l = std::make_shared<Launched>();
    l->first_round = a.first_round = rounds_.take(a.plan.rounds);
    l->end_round = rounds_.next();
    cudaStream_t compute = cuda::current_stream(device_);
    cudaEvent_t ready;
    CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&l->done, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventRecord(ready, compute));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    cudaEventDestroy(ready);  // destruction waits for the event internally
    kernel(a, stream_);
    CUDA_CHECK(cudaEventRecord(l->done, stream_));
    CUDA_CHECK(cudaStreamWaitEvent(compute, l->done, 0));
    return l;
  }

  // Before freeing our buffer, wait (briefly) until the peers acked our last round: they
  // may still be reading it after our own kernels ended.
  void drain() {
    if (!opened_ || aborted_ || rounds_.next() == 1) return;
    IpcKernelArgs a;
    a.plan = make_ipc_plan({0, 1}, region_bytes_, 1, region_bytes_, 1, 1);
    a.plan.rounds = 0;
    a.n = size_;
    a.me = rank_;
    for (int q = 0; q < size_; ++q) a.bufs[q] = bufs_[q];
    a.fail_word = fail_word_;
    a.status = &host_dev_->status;
    a.abort = &host_dev_->abort;
    a.timeout_ns = uint64_t(std::min(timeout_s_, 10.0) * 1e9);
    a.first_round = rounds_.next() + 1;  // needs acks >= next - 1, the last round run
    launch_ipc_drain(a, stream_);
    cudaStreamSynchronize(stream_);
  }

  // Runs in the destructor: nothing here may throw (no DeviceGuard, errors ignored).
  void release() {
    int prev = -1;
    cudaGetDevice(&prev);
    cudaSetDevice(device_);
    try {
      drain();
    } catch (...) {
    }
    if (host_) host_->abort = 1;
    if (stream_) cudaStreamSynchronize(stream_);
    for (int q = 0; q < size_; ++q)
      if (q != rank_ && bufs_[q]) cudaIpcCloseMemHandle(bufs_[q]);
    if (mine_) cudaFree(mine_);
    if (fail_word_) cudaFree(fail_word_);
    if (stream_) cudaStreamDestroy(stream_);
    if (host_) cudaFreeHost(host_);
    if (prev >= 0) cudaSetDevice(prev);
    cudaGetLastError();
  }

  int rank_, size_, device_;
  double timeout_s_;
  size_t region_bytes_ = 0, slot_bytes_ = 0, sub_bytes_ = 0;
  int max_channels_ = kIpcMaxChannels;  // ipc_channel_limit of the group's GPUs
  char* mine_ = nullptr;
  char* bufs_[kIpcMaxRanks] = {};
  int* fail_word_ = nullptr;
  HostWords* host_ = nullptr;      // host-mapped: status and abort
  HostWords* host_dev_ = nullptr;  // the same, as the device sees it
  cudaStream_t stream_ = nullptr;
  IpcRounds rounds_;
  bool opened_ = false;
  bool aborted_ = false;
  std::mutex mu_;
};

std::vector<std::string> gather_strings(StoreClient& store, const std::string& prefix, int size, double timeout_s) {
  std::vector<std::string> v(static_cast<size_t>(size));
  for (int q = 0; q < size; ++q) v[size_t(q)] = store.get(prefix + std::to_string(q), timeout_s);
  return v;
}

}  // namespace

IpcSetup connect_ipc(StoreClient& store, const std::string& name, int rank, int size, int device, double timeout_s) {
  const std::string prefix = "ipc/" + name + "/";
  const char* env = std::getenv("RINGLOOM_IPC");
  const bool disabled = env && std::string(env) == "0";
  if (size < 2) return {nullptr, ipc_refusal(std::vector<std::string>(size_t(size)), {}, {}, disabled)};
  char bus[64] = {};
  CUDA_CHECK(cudaDeviceGetPCIBusId(bus, sizeof bus, device));
  int mps = 0;
  if (cudaDeviceGetAttribute(&mps, cudaDevAttrMpsEnabled, device) != cudaSuccess) {
    cudaGetLastError();
    mps = 0;
  }
  store.set(prefix + "info/" + std::to_string(rank), ipc_host_id() + "\n" + bus + "\n" + (mps ? "1" : "0"));
  std::vector<std::string> hosts, gpus;
  std::vector<bool> clients;
  for (const std::string& v : gather_strings(store, prefix + "info/", size, timeout_s)) {
    const size_t nl = v.find('\n'), nl2 = nl == std::string::npos ? nl : v.find('\n', nl + 1);
    hosts.push_back(v.substr(0, nl));
    gpus.push_back(nl == std::string::npos ? "" : v.substr(nl + 1, nl2 == std::string::npos ? nl2 : nl2 - nl - 1));
    clients.push_back(nl2 != std::string::npos && v.substr(nl2 + 1) == "1");
  }
  std::string refusal = ipc_refusal(hosts, gpus, clients, disabled);
  if (!refusal.empty()) return {nullptr, refusal};

  auto g = std::make_unique<IpcGroup>(rank, size, device, timeout_s);
  std::string handle, err;
  try {
    handle = g->allocate();
  } catch (const Error& e) {
    err = e.what();
  }
  store.set(prefix + "handle/" + std::to_string(rank), handle);
  const std::vector<std::string> handles = gather_strings(store, prefix + "handle/", size, timeout_s);
  if (err.empty()) {
    try {
      g->open(handles, gpus);
    } catch (const Error& e) {
      err = e.what();
    }
  }
  store.set(prefix + "open/" + std::to_string(rank), err.empty() ? std::string("ok") : err);
  const std::vector<std::string> opened = gather_strings(store, prefix + "open/", size, timeout_s);
  for (int q = 0; q < size; ++q)
    if (opened[size_t(q)] != "ok")
      return {nullptr, str_cat("rank ", q, " could not set up CUDA IPC: ", opened[size_t(q)])};
  return {std::move(g), ""};
}

}  // namespace ringloom::comm
#endif  // RINGLOOM_WITH_CUDA
