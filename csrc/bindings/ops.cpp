// ringloom._C.ops: one line per op entry point (csrc/ops/<op>.h documents each).
#include <pybind11/stl.h>

#include <optional>

#include "bindings/registry.h"
#include "ops/activation.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/attention_backend.h"
#include "ops/cross_entropy.h"
#include "ops/cross_entropy_shard.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/layernorm.h"
#include "ops/matmul.h"
#include "ops/orthonormalize.h"
#include "ops/qsgd.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/topk.h"

namespace py = pybind11;
using namespace ringloom;
using OptTensor = std::optional<Tensor>;

// Optional tensor arguments arrive as None from Python and as an undefined Tensor in C++.
static Tensor opt(const OptTensor& t) { return t ? *t : Tensor(); }

// The backward ops that can also write the forward output: (dx, y) when return_output,
// else dx. run(y_or_null) calls the op.
template <class Run>
static py::object dx_and_output(bool return_output, Run run) {
  Tensor y;
  Tensor dx = run(return_output ? &y : nullptr);
  return return_output ? py::object(py::make_tuple(dx, y)) : py::cast(dx);
}

RINGLOOM_BIND(ops, 10) {
  py::module_ o = m.attr("ops");
  const py::none none;
  o.def("matmul_forward",
        [](const Tensor& x, const Tensor& w, const OptTensor& b, const OptTensor& r) {
          return matmul_forward(x, w, opt(b), opt(r));
        },
        py::arg("x"), py::arg("w"), py::arg("bias") = none, py::arg("residual") = none);
  o.def("matmul_backward_input", &matmul_backward_input, py::arg("dy"), py::arg("w"));
  o.def("matmul_backward_weight",
        [](const Tensor& dy, const Tensor& x, Tensor& dw, const OptTensor& db, bool acc) {
          Tensor dbias = opt(db);
          matmul_backward_weight(dy, x, dw, dbias, acc);
        }, py::arg("dy"), py::arg("x"), py::arg("dw"),
        py::arg("dbias") = none, py::arg("accumulate") = true);
  o.def("embedding_forward",
        [](const Tensor& ids, const Tensor& wte, const OptTensor& wpe) { return embedding_forward(ids, wte, opt(wpe)); }, py::arg("ids"), py::arg("wte"), py::arg("wpe") = none);
  o.def("embedding_backward",
        [](const Tensor& ids, const Tensor& dout, Tensor& dwte, const OptTensor& dwpe) {
          Tensor p = opt(dwpe);
          embedding_backward(ids, dout, dwte, p);
        }, py::arg("ids"), py::arg("dout"), py::arg("dwte"),
        py::arg("dwpe") = none);
  o.def("embedding_shard_forward",
        [](const Tensor& ids, const Tensor& wte, const OptTensor& wpe, int64_t vocab_start) {
          return embedding_shard_forward(ids, wte, opt(wpe), vocab_start);
        }, py::arg("ids"), py::arg("wte"), py::arg("wpe") = none, py::arg("vocab_start") = 0);
  o.def("embedding_shard_backward",
        [](const Tensor& ids, const Tensor& dout, Tensor& dwte, const OptTensor& dwpe, int64_t vocab_start) {
          Tensor p = opt(dwpe);
          embedding_shard_backward(ids, dout, dwte, p, vocab_start);
        }, py::arg("ids"), py::arg("dout"), py::arg("dwte"), py::arg("dwpe") = none, py::arg("vocab_start") = 0);
  o.def("layernorm_forward", &layernorm_forward, py::arg("x"), py::arg("gamma"), py::arg("beta"),
        py::arg("eps") = 1e-5f);
  o.def("layernorm_backward",
        [](const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
           Tensor& dgamma, Tensor& dbeta, const OptTensor& residual, const OptTensor& beta,
           bool return_output) {
          return dx_and_output(return_output, [&](Tensor* y) {
            return layernorm_backward(dy, x, gamma, mean, rstd, dgamma, dbeta, opt(residual), opt(beta), y);
          });
        },
        py::arg("dy"), py::arg("x"), py::arg("gamma"), py::arg("mean"), py::arg("rstd"), py::arg("dgamma"),
        py::arg("dbeta"), py::arg("residual") = none, py::arg("beta") = none, py::arg("return_output") = false);
  o.def("rmsnorm_forward", &rmsnorm_forward, py::arg("x"), py::arg("gamma"), py::arg("eps") = 1e-5f);
  o.def("rmsnorm_backward",
        [](const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, Tensor& dgamma,
           const OptTensor& residual, bool return_output) {
          return dx_and_output(return_output,
                               [&](Tensor* y) { return rmsnorm_backward(dy, x, gamma, rstd, dgamma, opt(residual), y); });
        },
        py::arg("dy"), py::arg("x"), py::arg("gamma"), py::arg("rstd"), py::arg("dgamma"),
        py::arg("residual") = none, py::arg("return_output") = false);
  o.def("attention_forward", &attention_forward, py::arg("qkv"), py::arg("n_head"), py::arg("n_kv_head"),
        py::arg("causal") = true, py::arg("scale") = 0.0f);
  o.def("attention_backward", &attention_backward, py::arg("dout"), py::arg("qkv"), py::arg("out"), py::arg("lse"),
        py::arg("n_head"), py::arg("n_kv_head"), py::arg("causal") = true, py::arg("scale") = 0.0f,
        py::arg("deterministic") = false);
  o.def("gelu_forward", &gelu_forward, py::arg("x"));
  o.def("gelu_backward",
        [](const Tensor& dy, const Tensor& x, bool return_output) {
          return dx_and_output(return_output, [&](Tensor* y) { return gelu_backward(dy, x, y); });
        },
        py::arg("dy"), py::arg("x"), py::arg("return_output") = false);
  o.def("swiglu_forward", &swiglu_forward, py::arg("x"));
  o.def("swiglu_backward",
        [](const Tensor& dy, const Tensor& x, bool return_output) {
          return dx_and_output(return_output, [&](Tensor* y) { return swiglu_backward(dy, x, y); });
        },
        py::arg("dy"), py::arg("x"), py::arg("return_output") = false);
  o.def("rope_forward", &rope_forward, py::arg("x"), py::arg("n_rot_heads"), py::arg("base") = 10000.0f,
        py::arg("pos_offset") = 0);
  o.def("rope_backward", &rope_backward, py::arg("dx"), py::arg("n_rot_heads"), py::arg("base") = 10000.0f,
        py::arg("pos_offset") = 0);
  o.def("cross_entropy_forward", &cross_entropy_forward, py::arg("logits"), py::arg("targets"),
        py::arg("ignore_index") = -100);
  o.def("cross_entropy_forward_backward", &cross_entropy_forward_backward, py::arg("logits"), py::arg("targets"),
        py::arg("ignore_index") = -100, py::arg("grad_scale") = 1.0f);
  o.def("cross_entropy_shard_stats", &cross_entropy_shard_stats, py::arg("logits"), py::arg("targets"),
        py::arg("vocab_start"));
  o.def("cross_entropy_shard_combine", &cross_entropy_shard_combine, py::arg("stats"), py::arg("targets"),
        py::arg("ignore_index") = -100);
  o.def("cross_entropy_shard_backward", &cross_entropy_shard_backward, py::arg("logits"), py::arg("targets"),
        py::arg("lse"), py::arg("vocab_start"), py::arg("ignore_index") = -100, py::arg("grad_scale") = 1.0f);
  o.def("add", &add, py::arg("a"), py::arg("b"));
  o.def("add_", &add_, py::arg("a"), py::arg("b"));
  o.def("scale_", &scale_, py::arg("a"), py::arg("s"));
  o.def("topk_compress", &topk_compress, py::arg("acc"), py::arg("k"));
  o.def("topk_accumulate", &topk_accumulate, py::arg("out"), py::arg("gathered"), py::arg("world"), py::arg("k"));
  o.def("orthonormalize_columns_", &orthonormalize_columns_, py::arg("p"));
  o.def("set_attention_backend", [](const std::string& name) { set_attention_backend(parse_attention_backend(name)); },
        py::arg("name"),
        "Which implementation the CUDA attention op runs: \"ours\", \"cudnn\" (cuDNN fused SDPA: bf16, head dim "
        "64/128) or \"auto\" (per shape and direction, the one measured fastest: ops/attention_auto_table.h). "
        "Process-wide; the CPU op ignores it");
  o.def("get_attention_backend", [] { return std::string(attention_backend_name(attention_backend())); });
  o.def("hopper_attention_built", &hopper_attention_built,
        "Whether this build has the Hopper (sm_90a) attention kernels that \"ours\" runs on compute "
        "capability 9.0 GPUs (bf16, head dim 64/128)");
  o.def(
      "attention_auto_choice",
      [](int64_t head_dim, bool causal, int64_t seq_len, bool backward) {
        return std::string(attention_backend_name(attention_auto_choice(head_dim, causal, seq_len, backward)));
      },
      py::arg("head_dim"), py::arg("causal"), py::arg("seq_len"), py::arg("backward"),
      "The backend \"auto\" runs for a bf16 problem of this shape and direction (the measured table "
      "ops/attention_auto_table.h; cuDNN only where it is built)");
  o.def("attention_backend_candidates", &attention_backend_candidates,
        "The backends \"auto\" chooses among in this build (benchmarks/tune_attention_auto.py times each)");
  o.def("cudnn_attention_built", &cudnn_attention_built,
        "Whether this build has the cuDNN attention backend (CUDA, cuDNN and the cudnn-frontend headers)");
  o.def("qsgd_encode", &qsgd_encode, py::arg("g"), py::arg("levels"), py::arg("bucket"), py::arg("bits"),
        py::arg("seed"), py::arg("step"), py::arg("key"), py::arg("rank"),
        "QSGD payload (uint8, on g's device) of float32 g: per-bucket fp32 norms, then bits-wide codes");
  o.def("qsgd_decode_sum", &qsgd_decode_sum, py::arg("out"), py::arg("gathered"), py::arg("world"), py::arg("n"),
        py::arg("levels"), py::arg("bucket"), py::arg("bits"),
        "out = sum, in rank order, of the vectors the world payloads in gathered encode");
  o.def("qsgd_payload_bytes", &qsgd_payload_bytes, py::arg("n"), py::arg("bucket"), py::arg("bits"));
  o.def("grad_norm", &grad_norm, py::arg("grads"));
  o.def("adamw_step",
        [](const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m_,
           const std::vector<Tensor>& v, const std::vector<float>& weight_decay, float lr, float beta1, float beta2,
           float eps, int64_t step, float max_norm, const OptTensor& grad_norm_t, const std::vector<Tensor>& compute,
           const OptTensor& scalars) {
          AdamWConfig cfg;
          cfg.lr = lr; cfg.beta1 = beta1; cfg.beta2 = beta2; cfg.eps = eps; cfg.step = step; cfg.max_norm = max_norm;
          cfg.scalars = opt(scalars);
          adamw_step(params, grads, m_, v, weight_decay, compute, opt(grad_norm_t), cfg);
        },
        py::arg("params"), py::arg("grads"), py::arg("m"), py::arg("v"), py::arg("weight_decay"), py::arg("lr"),
        py::arg("beta1") = 0.9f, py::arg("beta2") = 0.95f, py::arg("eps") = 1e-8f, py::arg("step") = 1,
        py::arg("max_norm") = 0.0f, py::arg("grad_norm") = none, py::arg("compute") = std::vector<Tensor>{},
        py::arg("scalars") = none,
        "scalars: optional 3-element float32 tensor [lr, 1/bc1, 1/bc2] read instead of lr and step "
        "(CUDA Graph replay; fill it with adamw_write_scalars)");
  o.def("adamw_write_scalars",
        [](const Tensor& scalars, float lr, float beta1, float beta2, int64_t step) {
          AdamWConfig cfg;
          cfg.lr = lr; cfg.beta1 = beta1; cfg.beta2 = beta2; cfg.step = step;
          adamw_write_scalars(scalars, cfg);
        },
        py::arg("scalars"), py::arg("lr"), py::arg("beta1") = 0.9f, py::arg("beta2") = 0.95f, py::arg("step") = 1,
        "Writes [lr, 1/(1-beta1^step), 1/(1-beta2^step)] into a 3-element float32 tensor, in stream order");
}
