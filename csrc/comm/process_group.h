// ProcessGroup: the collectives of one group of ranks (the world, or a sub-group for a
// dp x pp mesh) over our TCP backends.
//
// Every op is validated in the caller's thread (shapes, dtypes, ranks: a bad call raises
// there and leaves the group usable), then queued to the group's worker thread, which runs
// ops one at a time in the order they were issued; the caller gets a Work handle. Ranks
// must issue the same ops in the same order, as with NCCL; on the TCP path each collective
// first compares a small descriptor across the ranks (comm/flight_recorder.h), so a rank
// that passes other sizes or dtypes gets a ValueError on every rank instead of garbage, and
// an op that fails names the call in flight and the last ones completed. An op that fails half-way (a
// peer died, a deadline passed) leaves the byte streams out of step, so the group is then
// marked broken: its connections are shut (the other ranks see EOF at once instead of
// waiting out their timeouts) and every later op raises the first error again.
//
// Backends: "ring" (bandwidth-optimal), "tree" (double binary tree, latency-bound sizes),
// "auto" (tree up to RINGLOOM_TREE_MAX_BYTES, default 256 KiB, ring above). Sum and max
// on float32, bfloat16 (reduced in fp32, rounded once), int32, int64, uint8; avg on the
// floating types. Data movement without reduction (all_gather, broadcast, send/recv) works
// on every dtype. Tensors on a GPU are staged through host memory.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/flight_recorder.h"
#include "comm/ipc_transport.h"
#include "comm/peer_links.h"
#include "comm/reduce.h"
#include "comm/store.h"
#include "core/tensor.h"

namespace ringloom::comm {

// The handle of one queued op.
class Work {
 public:
  explicit Work(std::string op) : op_(std::move(op)) {}
  // Waits up to `seconds` (negative: no limit). True once the op finished; rethrows its
  // error if it failed. False if it is still running when the time is up.
  bool wait_for(double seconds);
  bool is_completed();
  const std::string& op() const { return op_; }
  void finish(std::exception_ptr err);
  std::vector<Tensor> keep;  // the op's tensors, alive until the handle is dropped
  CallDesc desc;             // what the op is, for agreement between ranks and the flight recorder

 private:
  std::string op_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr err_;
};

enum class Backend { Auto, Ring, Tree };
Backend parse_backend(const std::string& name);
const char* backend_name(Backend b);

class ProcessGroup {
 public:
  // `members` are global ranks in group order; this process is global rank `global_rank`.
  // Collective over the members: connects the PeerLinks through `store` under `name`.
  ProcessGroup(std::shared_ptr<StoreClient> store, std::shared_ptr<void> keepalive, std::string name,
               std::vector<int> members, int global_rank, Backend backend, double timeout_s, std::string token);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return me_; }  // index within this group
  int size() const { return int(members_.size()); }
  const std::vector<int>& members() const { return members_; }
  Backend backend() const { return backend_; }
  double timeout() const { return timeout_s_; }
  const std::string& name() const { return name_; }

  std::shared_ptr<Work> all_reduce(const Tensor& t, ReduceOp op);
  // in: size * out.numel() elements; out gets this rank's reduced segment.
  std::shared_ptr<Work> reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op);
  // out: size * in.numel() elements, rank i's input at segment i.
  std::shared_ptr<Work> all_gather(const Tensor& out, const Tensor& in);
  std::shared_ptr<Work> broadcast(const Tensor& t, int src);
  std::shared_ptr<Work> barrier();
  std::shared_ptr<Work> send(const Tensor& t, int dst);
  std::shared_ptr<Work> recv(const Tensor& t, int src);

  // A sub-group of the given global ranks (collective over those ranks only); nullptr when
  // this process is not one of them.
  std::shared_ptr<ProcessGroup> new_group(std::vector<int> ranks, Backend backend);

  // Fails queued ops, stops the worker and closes the connections. Idempotent.
  void shutdown();

  StoreClient& store() { return *store_; }

  // How CUDA tensors travel: "ipc", "tcp (<why not ipc>)", or "undecided" before the first
  // CUDA op.
  std::string cuda_transport();
  // Every rank of the group must set the same value (it picks the algorithm).
  void set_ipc_oneshot_max_bytes(size_t bytes);
  size_t ipc_oneshot_max_bytes() const { return ipc_oneshot_max_; }

 private:
  using Fn = std::function<void(Deadline)>;
  std::shared_ptr<Work> enqueue(const std::string& op, std::vector<Tensor> keep, Fn fn, CallDesc desc = {});
  // Runs one op on the worker thread: agreement on the call, then the op, recording both.
  void run_one(const std::shared_ptr<Work>& w, Fn& fn);
  void worker_loop();
  Backend pick(size_t nbytes) const;
  std::string where(const char* op) const;
  // The IPC transport for a CUDA tensor (setting it up on first use), or null: staged path.
  IpcTransport* ipc_for(const Tensor& t, const char* op);
  void abort_ipc();
  // Launches an IPC op in the caller's thread and queues its completion on the worker.
  template <typename Launch>
  std::shared_ptr<Work> run_ipc(const std::string& op, std::vector<Tensor> keep, IpcTransport* ipc, Launch launch);

  std::shared_ptr<StoreClient> store_;
  std::shared_ptr<void> keepalive_;  // the store server, on the rank that runs it
  std::string name_;
  std::vector<int> members_;
  int me_ = -1;
  Backend backend_;
  double timeout_s_;
  std::string token_;
  std::unique_ptr<PeerLinks> links_;
  // Worker-thread state: the op being run, and whether it finishes its Work itself later
  // (a send completes on a PeerLinks sender thread).
  std::shared_ptr<Work> current_;
  bool deferred_ = false;
  uint64_t calls_ = 0;        // ops run, the flight recorder's numbering
  uint64_t collectives_ = 0;  // TCP collectives run, the number the ranks agree on
  FlightRecorder recorder_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::shared_ptr<Work>, Fn>> queue_;
  bool stop_ = false;
  std::string broken_;  // the error that broke the group, empty while healthy
  ErrorKind broken_kind_ = ErrorKind::Runtime;
  std::map<std::vector<int>, int> subgroup_count_;

  std::mutex ipc_mu_;  // guards the three below (set-up happens in a caller's thread)
  bool ipc_decided_ = false;
  std::unique_ptr<IpcTransport> ipc_;
  std::string ipc_refusal_;
  size_t ipc_oneshot_max_;

  std::thread worker_;
};

}  // namespace ringloom::comm
