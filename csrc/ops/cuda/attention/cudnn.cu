// Attention through cuDNN's fused SDPA (cuDNN >= 9, frontend graph API, header-only from
// the nvidia-cudnn-frontend package). One cuDNN graph per problem (shapes, causal, scale,
// direction, device), built once (building picks and compiles an engine: milliseconds)
// and cached; a call then only executes it on the device's current stream.
//
// Layout: our qkv[B, T, Hq + 2Hkv, D] is handed to cuDNN without copies as three strided
// views in its (b, h, s, d) order: stride_b = T*H*D, stride_h = D, stride_s = H*D,
// stride_d = 1 (H = Hq + 2Hkv), at element offsets 0, Hq*D and (Hq+Hkv)*D. cuDNN supports
// GQA directly (K/V with fewer heads; it sums dK/dV over each group). Its softmax stats
// output is the natural-log log-sum-exp of the scaled scores per row, which is our lse
// [B, Hq, T] (stride_b = Hq*T, stride_h = T, stride_s = 1), so it is written there and
// read back by the backward. dqkv is written as three strided views of one packed tensor.
#include "ops/cuda/attention/cudnn.h"

#include <cmath>

#include "core/cuda/check.h"
#include "core/cuda/context.h"

#ifdef RINGLOOM_WITH_CUDNN_FRONTEND
#include <cudnn_frontend.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#endif

namespace ringloom::cuda {

bool cudnn_attention_supports(const Tensor& qkv) {
#ifdef RINGLOOM_WITH_CUDNN_FRONTEND
  return qkv.dtype() == DType::BFloat16 && (qkv.size(3) == 64 || qkv.size(3) == 128);
#else
  return false;
#endif
}

#ifndef RINGLOOM_WITH_CUDNN_FRONTEND

std::pair<Tensor, Tensor> cudnn_attention_forward(const Tensor&, int64_t, int64_t, bool, float) {
  fail(ErrorKind::NotImplemented,
       "attention_forward: cuDNN attention not built (the cudnn-frontend headers were not found when ringloom was "
       "compiled: pip install nvidia-cudnn-frontend and rebuild, or use attention backend \"ours\")");
}
Tensor cudnn_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, bool,
                                float) {
  fail(ErrorKind::NotImplemented,
       "attention_backward: cuDNN attention not built (the cudnn-frontend headers were not found when ringloom was "
       "compiled: pip install nvidia-cudnn-frontend and rebuild, or use attention backend \"ours\")");
}

#else

namespace fe = cudnn_frontend;

#define CUDNN_CHECK(expr)                                                                              \
  do {                                                                                                 \
    cudnnStatus_t st_ = (expr);                                                                        \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                                   \
      ::ringloom::fail(::ringloom::ErrorKind::Runtime, "cuDNN error ", cudnnGetErrorString(st_), " in ", \
                       #expr, " at ", __FILE__, ":", __LINE__);                                        \
  } while (0)

#define FE_CHECK(op, expr)                                                                                \
  do {                                                                                                    \
    auto st_ = (expr);                                                                                    \
    if (st_.is_bad()) ::ringloom::fail(::ringloom::ErrorKind::Runtime, op, ": cuDNN frontend: ", st_.get_message(), \
                                       " (in ", #expr, ")");                                             \
  } while (0)

namespace {

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

struct Problem {
  int64_t B, T, Hq, Hkv, D;
  bool causal;
  float scale;
  bool backward;
  int device;
  bool operator<(const Problem& o) const {
    return std::tie(B, T, Hq, Hkv, D, causal, scale, backward, device) <
           std::tie(o.B, o.T, o.Hq, o.Hkv, o.D, o.causal, o.scale, o.backward, o.device);
  }
};

struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace = 0;
};

cudnnHandle_t handle(int device) {
  static std::mutex mu;
  static std::map<int, cudnnHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  DeviceGuard g(device);
  cudnnHandle_t h = nullptr;
  CUDNN_CHECK(cudnnCreate(&h));
  handles[device] = h;
  return h;
}

// (b, h, s, d) dims and strides of `heads` heads inside a [B, T, Hrow, D] row layout.
fe::graph::Tensor_attributes view(const char* name, int64_t uid, const Problem& p, int64_t heads, int64_t row_heads) {
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_uid(uid)
      .set_dim({p.B, heads, p.T, p.D})
      .set_stride({p.T * row_heads * p.D, p.D, row_heads * p.D, 1});
}

Plan build(const Problem& p, cudnnHandle_t h, const char* op) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const int64_t H = p.Hq + 2 * p.Hkv;
  auto Q = g->tensor(view("Q", kQ, p, p.Hq, H));
  auto K = g->tensor(view("K", kK, p, p.Hkv, H));
  auto V = g->tensor(view("V", kV, p, p.Hkv, H));
  auto lse_attrs = [&](auto& t) {
    t->set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim({p.B, p.Hq, p.T, 1}).set_stride(
        {p.Hq * p.T, p.T, 1, 1});
  };
  if (!p.backward) {
    auto opts = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_attn_scale(p.scale);
    if (p.causal) opts.set_causal_mask(true);
    auto [O, stats] = g->sdpa(Q, K, V, opts);
    O->set_output(true).set_uid(kO).set_dim({p.B, p.Hq, p.T, p.D}).set_stride(
        {p.T * p.Hq * p.D, p.D, p.Hq * p.D, 1});
    stats->set_output(true);
    lse_attrs(stats);
  } else {
    auto O = g->tensor(view("O", kO, p, p.Hq, p.Hq));
    auto dO = g->tensor(view("dO", kDO, p, p.Hq, p.Hq));
    auto stats = g->tensor(fe::graph::Tensor_attributes().set_name("stats"));
    lse_attrs(stats);
    auto opts = fe::graph::SDPA_backward_attributes().set_name("sdpa_backward").set_attn_scale(p.scale);
    if (p.causal) opts.set_causal_mask(true);
    auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, stats, opts);
    const int64_t heads[3] = {p.Hq, p.Hkv, p.Hkv};
    const int64_t uids[3] = {kDQ, kDK, kDV};
    std::shared_ptr<fe::graph::Tensor_attributes> outs[3] = {dQ, dK, dV};
    for (int i = 0; i < 3; ++i)
      outs[i]->set_output(true).set_uid(uids[i]).set_dim({p.B, heads[i], p.T, p.D}).set_stride(
          {p.T * H * p.D, p.D, H * p.D, 1});
  }
  FE_CHECK(op, g->validate());
  FE_CHECK(op, g->build_operation_graph(h));
  FE_CHECK(op, g->create_execution_plans({fe::HeurMode_t::A}));
  FE_CHECK(op, g->check_support(h));
  FE_CHECK(op, g->build_plans(h));
  Plan plan;
  plan.graph = g;
  FE_CHECK(op, g->get_workspace_size(plan.workspace));
  return plan;
}

const Plan& plan_for(const Problem& p, cudnnHandle_t h, const char* op) {
  static std::mutex mu;
  static std::map<Problem, Plan> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(p);
  if (it == plans.end()) it = plans.emplace(p, build(p, h, op)).first;
  return it->second;
}

Problem problem(const char* op, const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal, float scale,
                bool backward) {
  RL_CHECK(cudnn_attention_supports(qkv), Value, op, ": the cuDNN attention backend needs bf16 qkv with head dim 64 "
           "or 128, got ", qkv.describe());
  const int64_t D = qkv.size(3);
  return Problem{qkv.size(0), qkv.size(1), n_head, n_kv_head, D, causal,
                 scale > 0.f ? scale : 1.f / std::sqrt(float(D)), backward, qkv.device().index};
}

void run(const Plan& plan, cudnnHandle_t h, std::unordered_map<int64_t, void*>& pack, const Tensor& like,
         const char* op) {
  const int dev = like.device().index;
  CUDNN_CHECK(cudnnSetStream(h, current_stream(dev)));
  Tensor workspace;
  if (plan.workspace > 0) workspace = Tensor::empty({plan.workspace}, DType::UInt8, like.device());
  FE_CHECK(op, plan.graph->execute(h, pack, plan.workspace > 0 ? workspace.data() : nullptr));
}

char* at(const Tensor& t, int64_t elements) { return static_cast<char*>(t.data()) + elements * dtype_size(t.dtype()); }

}  // namespace

std::pair<Tensor, Tensor> cudnn_attention_forward(const Tensor& qkv, int64_t n_head, int64_t n_kv_head, bool causal,
                                                  float scale) {
  const char* op = "attention_forward";
  const Problem p = problem(op, qkv, n_head, n_kv_head, causal, scale, false);
  Tensor out = Tensor::empty({p.B, p.T, p.Hq, p.D}, qkv.dtype(), qkv.device());
  Tensor lse = Tensor::empty({p.B, p.Hq, p.T}, DType::Float32, qkv.device());
  if (qkv.numel() == 0) return {out, lse};
  DeviceGuard guard(p.device);
  cudnnHandle_t h = handle(p.device);
  const Plan& plan = plan_for(p, h, op);
  std::unordered_map<int64_t, void*> pack = {{kQ, at(qkv, 0)},
                                             {kK, at(qkv, p.Hq * p.D)},
                                             {kV, at(qkv, (p.Hq + p.Hkv) * p.D)},
                                             {kO, out.data()},
                                             {kStats, lse.data()}};
  run(plan, h, pack, qkv, op);
  return {out, lse};
}

Tensor cudnn_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                int64_t n_head, int64_t n_kv_head, bool causal, float scale) {
  const char* op = "attention_backward";
  const Problem p = problem(op, qkv, n_head, n_kv_head, causal, scale, true);
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  if (qkv.numel() == 0) return dqkv;
  DeviceGuard guard(p.device);
  cudnnHandle_t h = handle(p.device);
  const Plan& plan = plan_for(p, h, op);
  std::unordered_map<int64_t, void*> pack = {{kQ, at(qkv, 0)},
                                             {kK, at(qkv, p.Hq * p.D)},
                                             {kV, at(qkv, (p.Hq + p.Hkv) * p.D)},
                                             {kO, out.data()},
                                             {kDO, dout.data()},
                                             {kStats, lse.data()},
                                             {kDQ, at(dqkv, 0)},
                                             {kDK, at(dqkv, p.Hq * p.D)},
                                             {kDV, at(dqkv, (p.Hq + p.Hkv) * p.D)}};
  run(plan, h, pack, qkv, op);
  return dqkv;
}

#endif  // RINGLOOM_WITH_CUDNN_FRONTEND

}  // namespace ringloom::cuda
