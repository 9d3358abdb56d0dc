// TransformerBlock: one pre-norm decoder block (GPT-2 and LLaMA differ only in config).
//   h1  = norm1(x)
//   qkv = h1 Wqkv^T (+b)            viewed as [B, T, Hq + 2 Hkv, D], heads packed q | k | v
//   rope(qkv) on the Hq + Hkv query and key heads, in place          (LLaMA)
//   att = causal_attention(qkv)      [B, T, Hq, D] -> [B, T, C]      (GQA when Hkv < Hq)
//   x2  = x + att Wo^T (+b)          the residual added in the GEMM (ops/matmul.h)
//   h2  = norm2(x2)
//   f   = h2 Wfc^T (+b)              [B, T, F] (GELU) or [B, T, 2F] packed gate | up (SwiGLU)
//   g   = gelu(f) | swiglu(f)        [B, T, F]
//   y   = x2 + g Wdown^T (+b)
// backward_input runs this in reverse for dx and keeps, per linear, the pair (dy, input)
// its weight gradient needs; backward_weight does those four GEMMs and adds the norm
// gradients. Each residual's gradient is added inside the norm backward of its branch.
// Parameter names: ln1.*, attn.qkv.*, attn.proj.*, ln2.*, mlp.fc.*, mlp.proj.*.
//
// Activation recomputation (Chen et al. 2016, "Training deep nets with sublinear memory
// cost"; Korthikanti et al. 2022 for the selective variant) trades compute for the memory
// a slot holds between forward and backward_input:
//   none       keeps everything listed in Saved.
//   selective  drops h1 = norm1(x), h2 = norm2(x2) and g = act(f) (2C + F values per
//              token, no GEMM to redo). Only the weight half needs them again, and the
//              backward kernels of the activation and of both norms already read their
//              inputs, so those kernels write them back (one extra write each, no extra
//              pass; ops/activation.h, ops/layernorm.h).
//   full       keeps only the block input x and re-runs the whole forward at the start of
//              backward_input (one extra forward: about a third more compute).
// The recomputed tensors come from the same kernels on the same inputs, so losses and
// gradients are bit-identical to `none` wherever the kernels are deterministic.
#pragma once
#include "layers/layer.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "ops/attention_backend.h"

namespace ringloom::layers {

enum class MlpKind { GELU, SwiGLU };
const char* mlp_kind_name(MlpKind k);

enum class Recompute { None, Selective, Full };
const char* recompute_name(Recompute r);
Recompute parse_recompute(const std::string& name);  // ValueError naming the choices

struct BlockConfig {
  int64_t n_embd = 128;
  int64_t n_head = 4;
  int64_t n_kv_head = 4;      // < n_head: grouped-query attention
  int64_t ffn_hidden = 512;   // F
  NormKind norm = NormKind::LayerNorm;
  MlpKind mlp = MlpKind::GELU;
  bool bias = true;           // biases on the linear layers
  bool rope = false;
  float rope_base = 10000.0f;
  float norm_eps = 1e-5f;

  int64_t head_dim() const { return n_head > 0 ? n_embd / n_head : 0; }
  void validate() const;  // ValueError naming the inconsistent fields
};

class TransformerBlock : public Layer {
 public:
  TransformerBlock(const BlockConfig& config, DType dtype, Device device);

  const char* kind() const override { return "TransformerBlock"; }
  std::vector<Param> params() const override;
  Tensor forward(int slot, const Tensor& x) override;
  Tensor backward_input(int slot, const Tensor& dy) override;
  void backward_weight(int slot) override;
  Tensor infer(const Tensor& x) const override;
  void release(int slot) override { slots_.release(slot); }
  // Every parameter gradient is written by backward_weight's GEMMs and norm copies.
  void replace_grads_next() override { replace_grads_ = true; }
  std::vector<int> slots() const override { return slots_.slots(); }

  const BlockConfig& config() const { return cfg_; }

  // The attention implementation this block's calls use on a GPU (ops/attention_backend.h);
  // nullopt: the process-wide setting. A run-time choice, not part of the architecture.
  void set_attention_backend(std::optional<AttentionBackend> b) { attention_ = b; }
  std::optional<AttentionBackend> attention_backend() const { return attention_; }
  // Whether this block's attention backward must be bitwise reproducible run to run
  // (ops/attention.h: the `deterministic` argument). Off by default: slower.
  void set_deterministic_attention(bool on) { deterministic_attention_ = on; }
  bool deterministic_attention() const { return deterministic_attention_; }

  // What a slot keeps between forward and backward_input (see the top of this file). A
  // run-time choice: it applies to forwards issued after the change.
  void set_recompute(Recompute r) { recompute_ = r; }
  Recompute recompute() const { return recompute_; }
  // Bytes of the activations slot `slot` holds now (each storage counted once; the block
  // input, which the previous layer produced, included).
  size_t saved_bytes(int slot) const;

 private:
  struct Saved {
    Tensor x;          // the block input (also n1.x when the forward's tensors are kept)
    Recompute mode = Recompute::None;   // how the slot's forward saved
    // From forward, for backward_input.
    NormSaved n1, n2;
    Tensor qkv, att, lse, f;
    // Inputs of the four linears, kept until backward_weight.
    Tensor h1, att_flat, h2, g;
    // From backward_input, for backward_weight.
    Tensor d_qkv, d_proj, d_fc, d_down;
    NormGrads g1, g2;
  };
  void check_x(const char* what, const Tensor& x) const;
  Tensor run_forward(const Tensor& x, Saved* s) const;

  BlockConfig cfg_;
  DType dtype_;
  Device device_;
  Norm ln1_, ln2_;
  Linear qkv_, proj_, fc_, down_;
  SlotMap<Saved> slots_{"TransformerBlock"};
  std::optional<AttentionBackend> attention_;
  bool deterministic_attention_ = false;
  Recompute recompute_ = Recompute::None;
};

}  // namespace ringloom::layers
