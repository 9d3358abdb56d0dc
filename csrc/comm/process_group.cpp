#include "comm/process_group.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/algorithms.h"
#include "core/check.h"

namespace ringloom::comm {

// ---- Work ----

bool Work::wait_for(double seconds) {
  std::unique_lock<std::mutex> l(mu_);
  if (seconds < 0) cv_.wait(l, [&] { return done_; });
  else if (!cv_.wait_until(l, deadline_after(seconds), [&] { return done_; })) return false;
  if (err_) std::rethrow_exception(err_);
  return true;
}

bool Work::is_completed() {
  std::lock_guard<std::mutex> l(mu_);
  return done_;
}

void Work::finish(std::exception_ptr err) {
  {
    std::lock_guard<std::mutex> l(mu_);
    done_ = true;
    err_ = std::move(err);
  }
  cv_.notify_all();
}

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::Auto;
  if (name == "ring") return Backend::Ring;
  if (name == "tree") return Backend::Tree;
  fail(ErrorKind::Value, "ringloom.distributed: unknown TCP backend '", name, "' (expected auto, ring or tree)");
}

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::Auto: return "auto";
    case Backend::Ring: return "ring";
    case Backend::Tree: return "tree";
  }
  return "?";
}

// ---- helpers ----

namespace {

size_t tree_max_bytes() {
  static const size_t v = [] {
    const char* e = std::getenv("RINGLOOM_TREE_MAX_BYTES");
    return e ? size_t(std::atoll(e)) : size_t(256) << 10;
  }();
  return v;
}

size_t ipc_oneshot_default() {
  const char* e = std::getenv("RINGLOOM_IPC_ONESHOT_MAX_BYTES");
  return e && *e ? size_t(std::atoll(e)) : size_t(256) << 10;
}

void require_defined(const char* op, const Tensor& t) {
  RL_CHECK(t.defined(), Value, "ringloom.distributed: ", op, ": the tensor is undefined");
}

// A tensor the op writes its result into.
void require_output(const char* op, const Tensor& t) {
  require_defined(op, t);
  check_writable(str_cat("ringloom.distributed: ", op).c_str(), "the output", t);
}

bool reducible(DType t) {
  return t == DType::Float32 || t == DType::BFloat16 || t == DType::Int32 || t == DType::Int64 || t == DType::UInt8;
}

Tensor to_host(const Tensor& t) { return t.is_cpu() ? t : t.to(Device::cpu()); }
void from_host(const Tensor& t, const Tensor& host) {
  if (!t.is_cpu()) const_cast<Tensor&>(t).copy_from(host);
}

// The buffer the reduction runs on: the tensor's own memory, or an fp32 copy of a bf16
// tensor (summed in fp32 and rounded once at the end).
struct WireBuffer {
  std::vector<float> widened;
  Span span{nullptr, 0, 0};
  DType wire = DType::Float32;

  // copy: reduce on a private copy even when the dtype needs no widening.
  WireBuffer(const Tensor& host, bool copy, std::vector<char>* scratch) {
    const size_t n = size_t(host.numel());
    if (host.dtype() == DType::BFloat16) {
      widened.resize(n);
      bf16_to_f32(host.data_as<uint16_t>(), widened.data(), n);
      span = {reinterpret_cast<char*>(widened.data()), n, 4};
      wire = DType::Float32;
      return;
    }
    wire = host.dtype();
    span = {static_cast<char*>(host.data()), n, dtype_size(wire)};
    if (copy) {
      scratch->assign(span.data, span.data + n * span.esize);
      span.data = scratch->data();
    }
  }

  // Writes elements [start, start+count) of the result to dst (of the tensor's dtype).
  void write(void* dst, size_t start, size_t count, DType dtype, ReduceOp op, int size) {
    char* src = span.data + start * span.esize;
    if (op == ReduceOp::Avg) scale_f32(reinterpret_cast<float*>(src), count, 1.0f / float(size));
    if (dtype == DType::BFloat16) f32_to_bf16(reinterpret_cast<float*>(src), static_cast<uint16_t*>(dst), count);
    else if (dst != src) std::memcpy(dst, src, count * span.esize);
  }
};

}  // namespace

// ---- ProcessGroup ----

ProcessGroup::ProcessGroup(std::shared_ptr<StoreClient> store, std::shared_ptr<void> keepalive, std::string name,
                           std::vector<int> members, int global_rank, Backend backend, double timeout_s,
                           std::string token)
    : store_(std::move(store)),
      keepalive_(std::move(keepalive)),
      name_(std::move(name)),
      members_(std::move(members)),
      backend_(backend),
      timeout_s_(timeout_s),
      token_(std::move(token)),
      ipc_oneshot_max_(ipc_oneshot_default()) {
  RL_CHECK(timeout_s > 0, Value, "ringloom.distributed: timeout must be positive, got ", timeout_s);
  for (size_t i = 0; i < members_.size(); ++i)
    if (members_[i] == global_rank) me_ = int(i);
  RL_CHECK(me_ >= 0, Value, "ringloom.distributed: rank ", global_rank, " is not a member of group '", name_, "'");
  links_ = std::make_unique<PeerLinks>(*store_, "pg/" + name_, me_, members_, token_, timeout_s_);
  worker_ = std::thread([this] { worker_loop(); });
}

ProcessGroup::~ProcessGroup() { shutdown(); }

void ProcessGroup::shutdown() {
  std::deque<std::pair<std::shared_ptr<Work>, Fn>> left;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_ && !worker_.joinable()) return;
    stop_ = true;
    left.swap(queue_);
  }
  cv_.notify_all();
  for (auto& [w, fn] : left)
    w->finish(std::make_exception_ptr(
        Error(ErrorKind::Runtime, "ringloom.distributed: " + w->op() + " was cancelled: the process group was shut down")));
  if (worker_.joinable()) worker_.join();
  links_.reset();
  std::lock_guard<std::mutex> l(ipc_mu_);
  ipc_.reset();  // waits (briefly) for the peers to finish reading our buffer
}

std::string ProcessGroup::where(const char* op) const {
  return str_cat("ringloom.distributed: ", op, " on rank ", me_, " of group '", name_, "' (size ", size(), ")");
}

Backend ProcessGroup::pick(size_t nbytes) const {
  if (backend_ != Backend::Auto) return backend_;
  return nbytes <= tree_max_bytes() ? Backend::Tree : Backend::Ring;
}

std::shared_ptr<Work> ProcessGroup::enqueue(const std::string& op, std::vector<Tensor> keep, Fn fn, CallDesc desc) {
  auto w = std::make_shared<Work>(op);
  w->keep = std::move(keep);
  w->desc = desc;
  {
    std::lock_guard<std::mutex> l(mu_);
    RL_CHECK(!stop_, Runtime, where(op.c_str()), ": the process group was shut down");
    queue_.emplace_back(w, std::move(fn));
  }
  cv_.notify_all();
  return w;
}

void ProcessGroup::worker_loop() {
  for (;;) {
    std::shared_ptr<Work> w;
    Fn fn;
    std::string broken;
    ErrorKind broken_kind;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      w = std::move(queue_.front().first);
      fn = std::move(queue_.front().second);
      queue_.pop_front();
      broken = broken_;
      broken_kind = broken_kind_;
    }
    if (!broken.empty()) {
      w->finish(std::make_exception_ptr(Error(
          broken_kind, str_cat(where(w->op().c_str()), ": the process group is unusable after an earlier error: ",
                               broken))));
      continue;
    }
    run_one(w, fn);
  }
}

void ProcessGroup::run_one(const std::shared_ptr<Work>& w, Fn& fn) {
  links_->begin(w->op());
  current_ = w;
  deferred_ = false;
  recorder_.begin(++calls_, w->op(), w->desc);
  const Deadline d = deadline_after(timeout_s_);
  if (w->desc.compare && check_collectives_enabled() && size() > 1) {
    try {
      agree_on_call(*links_, w->desc, ++collectives_, d, where(call_kind_name(w->desc.kind)));
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::Value) {
        // Every rank saw the same ranges and raises the same error; the byte streams are
        // still in step, so the group stays usable.
        recorder_.end(false);
        fn = nullptr;
        current_.reset();
        w->finish(std::current_exception());
        return;
      }
      // A transport failure during the agreement: handled below like any other.
      fn = [e](Deadline) { throw e; };
    }
  }
  std::string failure;
  ErrorKind kind = ErrorKind::Runtime;
  try {
    fn(d);
    fn = nullptr;  // drop the op's captures here, not when the next op replaces them
    current_.reset();
    recorder_.end(true);
    if (!deferred_) w->finish(nullptr);
    return;
  } catch (const Error& e) {
    failure = e.what();
    kind = e.kind();
  } catch (const std::exception& e) {
    failure = str_cat("unexpected error: ", e.what());
  } catch (...) {
    failure = "unexpected non-ringloom exception";
  }
  // Where this rank was and what it last completed: with every rank saying so, the stuck
  // rank is the one whose history ends earliest.
  const std::string history = recorder_.report();
  recorder_.end(false);
  std::fprintf(stderr, "ringloom.distributed: group '%s' rank %d (global rank %d): %s\n  %s\n", name_.c_str(), me_,
               members_[size_t(me_)], failure.c_str(), history.c_str());
  const std::string msg = failure + "\n  " + history;
  {
    std::lock_guard<std::mutex> l(mu_);
    broken_ = msg;
    broken_kind_ = kind;
  }
  links_->abort();  // peers waiting on us see EOF now instead of at their deadline
  abort_ipc();
  fn = nullptr;
  current_.reset();
  w->finish(std::make_exception_ptr(Error(kind, msg)));
}

void ProcessGroup::abort_ipc() {
  std::lock_guard<std::mutex> l(ipc_mu_);
  if (ipc_) ipc_->abort();  // kernels issued after the failed one stop at their first wait
}

// ---- the CUDA IPC path ----

IpcTransport* ProcessGroup::ipc_for(const Tensor& t, const char* op) {
  if (!t.is_cuda()) return nullptr;
  std::lock_guard<std::mutex> l(ipc_mu_);
  if (!ipc_decided_) {
    ipc_decided_ = true;
    try {
      IpcSetup s = connect_ipc(*store_, "pg/" + name_, me_, size(), t.device().index, timeout_s_);
      ipc_ = std::move(s.transport);
      ipc_refusal_ = s.refusal;
    } catch (const Error& e) {
      ipc_refusal_ = str_cat("the set-up failed: ", e.what());
      {
        std::lock_guard<std::mutex> lb(mu_);
        if (broken_.empty()) broken_ = ipc_refusal_;  // peers may have decided otherwise: stop here
      }
      throw;
    }
    if (!ipc_ && size() > 1)
      std::fprintf(stderr,
                   "ringloom.distributed: group '%s' rank %d: CUDA tensors go through host memory over TCP, not "
                   "CUDA IPC: %s (backend='nccl' is the GPU path between hosts)\n",
                   name_.c_str(), me_, ipc_refusal_.c_str());
  }
  if (!ipc_) return nullptr;
  RL_CHECK(t.device().index == ipc_->device(), Value, where(op), ": ", t.describe(), " is not on cuda:",
           ipc_->device(), ", the GPU this group's IPC buffers live on (one GPU per rank and group)");
  return ipc_.get();
}

template <typename Launch>
std::shared_ptr<Work> ProcessGroup::run_ipc(const std::string& op, std::vector<Tensor> keep, IpcTransport* ipc,
                                            Launch launch) {
  bool broken;
  {
    std::lock_guard<std::mutex> l(mu_);
    RL_CHECK(!stop_, Runtime, where(op.c_str()), ": the process group was shut down");
    broken = !broken_.empty();
  }
  if (broken) return enqueue(op, std::move(keep), [](Deadline) {});  // the worker raises the earlier error
  std::shared_ptr<void> launched = launch();
  return enqueue(op, std::move(keep), [ipc, launched, op](Deadline d) { ipc->finish(launched, op, d); });
}

std::string ProcessGroup::cuda_transport() {
  std::lock_guard<std::mutex> l(ipc_mu_);
  if (!ipc_decided_) return "undecided";
  return ipc_ ? std::string("ipc") : "tcp (" + ipc_refusal_ + ")";
}

void ProcessGroup::set_ipc_oneshot_max_bytes(size_t bytes) { ipc_oneshot_max_ = bytes; }

std::shared_ptr<Work> ProcessGroup::all_reduce(const Tensor& t, ReduceOp op) {
  const char* name = "all_reduce";
  require_output(name, t);
  RL_CHECK(reducible(t.dtype()), Type, where(name), ": cannot reduce ", t.describe(),
           " (supported: float32, bfloat16, int32, int64, uint8)");
  RL_CHECK(op != ReduceOp::Avg || is_floating(t.dtype()), Value, where(name), ": op='avg' needs a floating dtype, got ",
           t.describe(), " (use 'sum' and divide)");
  if (IpcTransport* ipc = ipc_for(t, name)) {
    const IpcAlgo algo = choose_ipc_algo(backend_ == Backend::Tree, t.nbytes(), ipc_oneshot_max_, ipc->region_bytes());
    return run_ipc(str_cat(name, " [ipc ", ipc_algo_name(algo), "]"), {t}, ipc,
                   [&] { return ipc->all_reduce(t, op, algo); });
  }
  const size_t wire_bytes = size_t(t.numel()) * (t.dtype() == DType::BFloat16 ? 4 : dtype_size(t.dtype()));
  const Backend algo = pick(wire_bytes);
  const int n = size();
  return enqueue(str_cat(name, " [", backend_name(algo), "]"), {t}, [this, t, op, algo, n](Deadline d) {
    Tensor host = to_host(t);
    WireBuffer wb(host, false, nullptr);
    if (algo == Backend::Tree) tree_all_reduce(*links_, wb.span, wb.wire, op, d);
    else ring_all_reduce(*links_, wb.span, wb.wire, op, d);
    wb.write(host.data(), 0, wb.span.count, t.dtype(), op, n);
    from_host(t, host);
  }, CallDesc{CallKind::AllReduce, int64_t(t.dtype()), t.numel(), -1, int64_t(op), -1, true});
}

std::shared_ptr<Work> ProcessGroup::reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) {
  const char* name = "reduce_scatter";
  require_output(name, out);
  require_defined(name, in);
  RL_CHECK(out.dtype() == in.dtype() && out.device() == in.device(), Type, where(name), ": output ", out.describe(),
           " and input ", in.describe(), " differ in dtype or device");
  RL_CHECK(reducible(in.dtype()), Type, where(name), ": cannot reduce ", in.describe());
  RL_CHECK(op != ReduceOp::Avg || is_floating(in.dtype()), Value, where(name),
           ": op='avg' needs a floating dtype, got ", in.describe());
  RL_CHECK(in.numel() == out.numel() * size(), Value, where(name), ": input ", in.describe(),
           " must hold size x output elements = ", size(), " x ", out.numel(), " (output ", out.describe(), ")");
  if (IpcTransport* ipc = ipc_for(in, name))
    return run_ipc(str_cat(name, " [ipc ring]"), {out, in}, ipc, [&] { return ipc->reduce_scatter(out, in, op); });
  const size_t wire_bytes = size_t(in.numel()) * (in.dtype() == DType::BFloat16 ? 4 : dtype_size(in.dtype()));
  const Backend algo = pick(wire_bytes);
  const int n = size(), me = me_;
  return enqueue(str_cat(name, " [", backend_name(algo), "]"), {out, in},
                 [this, out, in, op, algo, n, me](Deadline d) {
    Tensor hin = to_host(in), hout = to_host(out);
    std::vector<char> scratch;
    WireBuffer wb(hin, true, &scratch);  // the input stays untouched
    const size_t c = size_t(out.numel());
    std::vector<size_t> off(size_t(n) + 1);
    for (int i = 0; i <= n; ++i) off[size_t(i)] = c * size_t(i);
    // Small messages: the tree's log-depth all-reduce beats n-1 ring steps; keep our part.
    if (algo == Backend::Tree) tree_all_reduce(*links_, wb.span, wb.wire, op, d);
    else ring_reduce_scatter(*links_, wb.span, off, wb.wire, op, d);
    wb.write(hout.data(), c * size_t(me), c, out.dtype(), op, n);
    from_host(out, hout);
  }, CallDesc{CallKind::ReduceScatter, int64_t(in.dtype()), out.numel(), -1, int64_t(op), -1, true});
}

std::shared_ptr<Work> ProcessGroup::all_gather(const Tensor& out, const Tensor& in) {
  const char* name = "all_gather";
  require_output(name, out);
  require_defined(name, in);
  RL_CHECK(out.dtype() == in.dtype() && out.device() == in.device(), Type, where(name), ": output ", out.describe(),
           " and input ", in.describe(), " differ in dtype or device");
  RL_CHECK(out.numel() == in.numel() * size(), Value, where(name), ": output ", out.describe(),
           " must hold size x input elements = ", size(), " x ", in.numel(), " (input ", in.describe(), ")");
  if (IpcTransport* ipc = ipc_for(in, name))
    return run_ipc(str_cat(name, " [ipc ring]"), {out, in}, ipc, [&] { return ipc->all_gather(out, in); });
  const int n = size(), me = me_;
  return enqueue(str_cat(name, " [ring]"), {out, in}, [this, out, in, n, me](Deadline d) {
    Tensor hin = to_host(in), hout = to_host(out);
    const size_t es = dtype_size(in.dtype()), c = size_t(in.numel());
    Span span{static_cast<char*>(hout.data()), c * size_t(n), es};
    std::memmove(span.data + c * size_t(me) * es, hin.data(), c * es);  // `in` may be a view of `out`
    std::vector<size_t> off(size_t(n) + 1);
    for (int i = 0; i <= n; ++i) off[size_t(i)] = c * size_t(i);
    ring_all_gather(*links_, span, off, d);
    from_host(out, hout);
  }, CallDesc{CallKind::AllGather, int64_t(in.dtype()), in.numel(), -1, -1, -1, true});
}

std::shared_ptr<Work> ProcessGroup::broadcast(const Tensor& t, int src) {
  const char* name = "broadcast";
  require_output(name, t);
  RL_CHECK(src >= 0 && src < size(), Index, where(name), ": src=", src, " is not a rank of this group (0..",
           size() - 1, ")");
  if (IpcTransport* ipc = ipc_for(t, name))
    return run_ipc(str_cat(name, " [ipc chain] from rank ", src), {t}, ipc, [&] { return ipc->broadcast(t, src); });
  return enqueue(str_cat(name, " [tree] from rank ", src), {t}, [this, t, src](Deadline d) {
    Tensor host = to_host(t);
    tree_broadcast(*links_, Span{static_cast<char*>(host.data()), size_t(host.numel()), dtype_size(t.dtype())}, src, d);
    from_host(t, host);
  }, CallDesc{CallKind::Broadcast, int64_t(t.dtype()), t.numel(), src, -1, -1, true});
}

std::shared_ptr<Work> ProcessGroup::barrier() {
  return enqueue("barrier", {}, [this](Deadline d) {
    int32_t token = 0;
    tree_all_reduce(*links_, Span{reinterpret_cast<char*>(&token), 1, 4}, DType::Int32, ReduceOp::Sum, d);
  }, CallDesc{CallKind::Barrier, -1, 0, -1, -1, -1, true});
}

// Point-to-point messages carry their byte count first, so a send/recv mismatch is an
// error naming both sizes instead of silently misaligned data. A send only queues its
// bytes: the worker moves on at once (so a recv issued after it can run while the data is
// still going out: exchanges in both directions do not deadlock), and the send's Work
// completes on the sender thread once the kernel has taken the last byte.
std::shared_ptr<Work> ProcessGroup::send(const Tensor& t, int dst) {
  const char* name = "send";
  require_defined(name, t);
  RL_CHECK(dst >= 0 && dst < size() && dst != me_, Index, where(name), ": dst=", dst,
           " must be another rank of this group (0..", size() - 1, ")");
  return enqueue(str_cat(name, " to rank ", dst), {t}, [this, t, dst](Deadline d) {
    Tensor host = to_host(t);
    auto hdr = std::make_shared<uint64_t>(host.nbytes());
    std::shared_ptr<Work> w = current_;
    auto finish = [w, host, hdr](std::exception_ptr e) { w->finish(e); };
    deferred_ = true;
    if (host.nbytes() == 0) {
      links_->send(dst, hdr.get(), 8, d, finish);
    } else {
      links_->send(dst, hdr.get(), 8, d, [hdr](std::exception_ptr) {});
      links_->send(dst, host.data(), host.nbytes(), d, finish);
    }
  }, CallDesc{CallKind::Send, int64_t(t.dtype()), t.numel(), -1, -1, dst, false});
}

std::shared_ptr<Work> ProcessGroup::recv(const Tensor& t, int src) {
  const char* name = "recv";
  require_output(name, t);
  RL_CHECK(src >= 0 && src < size() && src != me_, Index, where(name), ": src=", src,
           " must be another rank of this group (0..", size() - 1, ")");
  return enqueue(str_cat(name, " from rank ", src), {t}, [this, t, src, name](Deadline d) {
    Tensor host = to_host(t);
    uint64_t nbytes = 0;
    links_->recv(src, &nbytes, 8, d);
    RL_CHECK(nbytes == host.nbytes(), Value, where(name), ": rank ", src, " sent ", nbytes,
             " bytes but this recv expects ", host.nbytes(), " (", t.describe(), ")");
    links_->recv(src, host.data(), host.nbytes(), d);
    from_host(t, host);
  }, CallDesc{CallKind::Recv, int64_t(t.dtype()), t.numel(), -1, -1, src, false});
}

std::shared_ptr<ProcessGroup> ProcessGroup::new_group(std::vector<int> ranks, Backend backend) {
  RL_CHECK(!ranks.empty(), Value, "ringloom.distributed: new_group needs at least one rank");
  std::vector<int> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  RL_CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), Value,
           "ringloom.distributed: new_group: ranks repeat");
  int global_rank = members_[size_t(me_)];
  int occurrence;
  {
    std::lock_guard<std::mutex> l(mu_);
    occurrence = subgroup_count_[ranks]++;
  }
  if (std::find(ranks.begin(), ranks.end(), global_rank) == ranks.end()) return nullptr;
  for (int r : ranks)
    RL_CHECK(std::find(members_.begin(), members_.end(), r) != members_.end(), Value,
             "ringloom.distributed: new_group: rank ", r, " is not in group '", name_, "'");
  // Members agree on the name without talking: the ranks and how often this set was made.
  std::string key = name_ + "/";
  for (size_t i = 0; i < ranks.size(); ++i) key += (i ? "," : "") + std::to_string(ranks[i]);
  if (key.size() > 512) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a keeps long rank lists inside the key limit
    for (char ch : key) h = (h ^ uint8_t(ch)) * 1099511628211ull;
    key = name_ + "/h" + std::to_string(h);
  }
  key += "#" + std::to_string(occurrence);
  return std::make_shared<ProcessGroup>(store_, keepalive_, key, ranks, global_rank, backend, timeout_s_, token_);
}

}  // namespace ringloom::comm
