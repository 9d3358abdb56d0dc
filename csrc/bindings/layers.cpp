// ringloom._C.layers: the layers of csrc/layers/ (layer.h documents the slot protocol).
// Undefined tensors cross as None both ways (Embedding.backward_input returns None;
// LMHead.backward_input takes None after forward_loss). The compute runs without the GIL.
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>

#include "bindings/convert.h"
#include "bindings/registry.h"
#include "core/size.h"
#include "layers/embedding.h"
#include "layers/lm_head.h"
#include "layers/transformer_block.h"
#include "ops/attention_backend.h"

namespace py = pybind11;
using namespace ringloom;
using namespace ringloom::layers;
using OptTensor = std::optional<Tensor>;

namespace {

Tensor opt_in(const OptTensor& t) { return t ? *t : Tensor(); }
OptTensor opt_out(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

NormKind norm_from_str(const std::string& s) {
  if (s == "layernorm") return NormKind::LayerNorm;
  if (s == "rmsnorm") return NormKind::RMSNorm;
  fail(ErrorKind::Value, "norm must be 'layernorm' or 'rmsnorm', got '", s, "'");
}

MlpKind mlp_from_str(const std::string& s) {
  if (s == "gelu") return MlpKind::GELU;
  if (s == "swiglu") return MlpKind::SwiGLU;
  fail(ErrorKind::Value, "mlp must be 'gelu' or 'swiglu', got '", s, "'");
}

using Release = py::call_guard<py::gil_scoped_release>;

}  // namespace

RINGLOOM_BIND(layers, 20) {
  py::module_ l = m.attr("layers");

  py::class_<Param>(l, "Param", "A parameter: name, value (layer dtype), grad (float32), decay (weight decay applies)")
      .def_readonly("name", &Param::name)
      .def_readonly("value", &Param::value)
      .def_readonly("grad", &Param::grad)
      .def_readonly("decay", &Param::decay)
      .def("__repr__", [](const Param& p) {
        return "<Param " + p.name + " " + p.value.describe() + (p.decay ? " decay" : "") + ">";
      });

  py::class_<BlockConfig>(l, "BlockConfig", "Configuration of one TransformerBlock")
      .def(py::init([](int64_t n_embd, int64_t n_head, int64_t n_kv_head, int64_t ffn_hidden, const std::string& norm,
                       const std::string& mlp, bool bias, bool rope, float rope_base, float norm_eps) {
             BlockConfig c;
             c.n_embd = n_embd;
             c.n_head = n_head;
             c.n_kv_head = n_kv_head > 0 ? n_kv_head : n_head;
             c.ffn_hidden = ffn_hidden > 0 ? ffn_hidden : checked_mul(4, n_embd, "BlockConfig: ffn_hidden = 4 n_embd");
             c.norm = norm_from_str(norm);
             c.mlp = mlp_from_str(mlp);
             c.bias = bias;
             c.rope = rope;
             c.rope_base = rope_base;
             c.norm_eps = norm_eps;
             c.validate();
             return c;
           }),
           py::arg("n_embd"), py::arg("n_head"), py::arg("n_kv_head") = 0, py::arg("ffn_hidden") = 0,
           py::arg("norm") = "layernorm", py::arg("mlp") = "gelu", py::arg("bias") = true, py::arg("rope") = false,
           py::arg("rope_base") = 10000.0f, py::arg("norm_eps") = 1e-5f,
           "n_kv_head 0 means n_head; ffn_hidden 0 means 4 * n_embd")
      .def_readonly("n_embd", &BlockConfig::n_embd)
      .def_readonly("n_head", &BlockConfig::n_head)
      .def_readonly("n_kv_head", &BlockConfig::n_kv_head)
      .def_readonly("ffn_hidden", &BlockConfig::ffn_hidden)
      .def_property_readonly("norm", [](const BlockConfig& c) { return std::string(norm_kind_name(c.norm)); })
      .def_property_readonly("mlp", [](const BlockConfig& c) { return std::string(mlp_kind_name(c.mlp)); })
      .def_readonly("bias", &BlockConfig::bias)
      .def_readonly("rope", &BlockConfig::rope)
      .def_readonly("rope_base", &BlockConfig::rope_base)
      .def_readonly("norm_eps", &BlockConfig::norm_eps)
      .def_property_readonly("head_dim", &BlockConfig::head_dim);

  py::class_<Layer, std::shared_ptr<Layer>>(l, "Layer", "Base of the layers: slots, forward/backward halves")
      .def_property_readonly("kind", [](const Layer& x) { return std::string(x.kind()); })
      .def("params", &Layer::params, "This layer's parameters (local names)")
      .def("forward", &Layer::forward, py::arg("slot"), py::arg("x"), Release(),
           "Forward for micro-batch `slot`, saving what backward needs")
      .def("backward_input",
           [](Layer& self, int slot, const OptTensor& dy) {
             py::gil_scoped_release nogil;
             return opt_out(self.backward_input(slot, opt_in(dy)));
           },
           py::arg("slot"), py::arg("dy"), "Input gradient (None for Embedding); keeps what backward_weight needs")
      .def("backward_weight", &Layer::backward_weight, py::arg("slot"), Release(),
           "Accumulate the parameter gradients of `slot` and free it")
      .def("backward",
           [](Layer& self, int slot, const OptTensor& dy) {
             py::gil_scoped_release nogil;
             return opt_out(self.backward(slot, opt_in(dy)));
           },
           py::arg("slot"), py::arg("dy"), "backward_input then backward_weight")
      .def("infer", &Layer::infer, py::arg("x"), Release(), "Forward without saving anything")
      .def("zero_grad", &Layer::zero_grad, Release(), "Zero every gradient (giving released ones memory again)")
      .def("release_grads", &Layer::release_grads, Release(),
           "Free the gradients' memory until the next backward_weight or zero_grad (torch's "
           "zero_grad(set_to_none=True)); meanwhile .grad has no memory")
      .def("replace_grads_next", &Layer::replace_grads_next, Release(),
           "The next backward's gradients replace .grad instead of adding to it (zero_grad without "
           "the pass over the gradients, where the layer writes them in place)")
      .def("release", &Layer::release, py::arg("slot"), "Drop a slot's activations (no-op when unused)")
      .def("slots", &Layer::slots, "Slots holding activations, ascending");

  py::class_<Embedding, Layer, std::shared_ptr<Embedding>>(l, "Embedding")
      .def(py::init([](int64_t vocab_size, int64_t n_embd, int64_t max_seq_len, bool learned_positions,
                       py::object dtype, py::object device) {
             return std::make_shared<Embedding>(vocab_size, n_embd, max_seq_len, learned_positions,
                                                bindings::dtype_from_py(dtype), bindings::device_from_py(device));
           }),
           py::arg("vocab_size"), py::arg("n_embd"), py::arg("max_seq_len"), py::arg("learned_positions") = true,
           py::arg("dtype") = "float32", py::arg("device") = "cpu")
      .def_property_readonly("vocab_size", &Embedding::vocab_size)
      .def_property_readonly("n_embd", &Embedding::n_embd)
      .def_property_readonly("max_seq_len", &Embedding::max_seq_len)
      .def_property_readonly("wte", &Embedding::wte);

  py::class_<TransformerBlock, Layer, std::shared_ptr<TransformerBlock>>(l, "TransformerBlock")
      .def(py::init([](const BlockConfig& cfg, py::object dtype, py::object device) {
             return std::make_shared<TransformerBlock>(cfg, bindings::dtype_from_py(dtype),
                                                       bindings::device_from_py(device));
           }),
           py::arg("config"), py::arg("dtype") = "float32", py::arg("device") = "cpu")
      .def_property_readonly("config", &TransformerBlock::config)
      .def_property(
          "attention_backend",
          [](const TransformerBlock& b) -> std::optional<std::string> {
            if (auto a = b.attention_backend()) return std::string(attention_backend_name(*a));
            return std::nullopt;
          },
          [](TransformerBlock& b, const std::optional<std::string>& name) {
            b.set_attention_backend(name ? std::optional<AttentionBackend>(parse_attention_backend(*name))
                                         : std::nullopt);
          },
          "This block's attention implementation on a GPU: \"ours\" | \"cudnn\" | \"auto\", or None for "
          "the process-wide setting (ops.set_attention_backend)")
      .def_property("deterministic_attention", &TransformerBlock::deterministic_attention,
                    &TransformerBlock::set_deterministic_attention,
                    "Whether the attention backward is bitwise reproducible run to run (slower on a GPU; "
                    "not with the cudnn backend)")
      .def_property(
          "recompute", [](const TransformerBlock& b) { return std::string(recompute_name(b.recompute())); },
          [](TransformerBlock& b, const std::string& name) { b.set_recompute(parse_recompute(name)); },
          "What a slot keeps between forward and backward_input: \"none\" (everything), \"selective\" "
          "(recomputes the norm outputs and the MLP activation), \"full\" (only the block input; the "
          "forward is re-run in backward_input). Applies to later forwards.")
      .def("saved_bytes", &TransformerBlock::saved_bytes, py::arg("slot"),
           "Bytes of activations the slot holds now (each storage once, the block input included)");

  py::class_<LMHead, Layer, std::shared_ptr<LMHead>>(l, "LMHead")
      .def(py::init([](int64_t n_embd, int64_t vocab_size, const std::string& norm, float norm_eps, py::object dtype,
                       py::object device) {
             return std::make_shared<LMHead>(n_embd, vocab_size, norm_from_str(norm), norm_eps,
                                             bindings::dtype_from_py(dtype), bindings::device_from_py(device));
           }),
           py::arg("n_embd"), py::arg("vocab_size"), py::arg("norm") = "layernorm", py::arg("norm_eps") = 1e-5f,
           py::arg("dtype") = "float32", py::arg("device") = "cpu")
      .def(py::init([](const Embedding& tied, const std::string& norm, float norm_eps) {
             return std::make_shared<LMHead>(tied, norm_from_str(norm), norm_eps);
           }),
           py::arg("tied"), py::arg("norm") = "layernorm", py::arg("norm_eps") = 1e-5f,
           "Tied to the embedding's wte: shares its value and grad tensors")
      .def("forward_loss", &LMHead::forward_loss, py::arg("slot"), py::arg("x"), py::arg("targets"),
           py::arg("grad_scale") = 1.0f, py::arg("ignore_index") = -100, Release())
      .def("logits", &LMHead::logits, py::arg("x"), Release())
      .def("loss", &LMHead::loss, py::arg("x"), py::arg("targets"), py::arg("ignore_index") = -100, Release())
      .def_property_readonly("tied", &LMHead::tied)
      .def_property_readonly("weight", &LMHead::weight)
      .def_property_readonly("vocab_size", &LMHead::vocab_size);
}
