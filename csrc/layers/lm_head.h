// LMHead: final norm and the output projection to the vocabulary, without bias.
//   h = norm(x);  logits = h W^T        W [V, C]
// With tied embeddings (GPT-2) W is the Embedding's wte: the head holds the same value
// and grad tensors, so both uses accumulate into one gradient; the tied weight is owned by
// the Embedding and not listed in the head's params(). Pipeline parallelism keeps the
// embedding and the head on different stages, so each holds its own copy: construct the
// head untied and keep the two copies equal (copy values; add the two gradients).
//
// Training uses forward_loss: logits, then the fused cross-entropy forward+backward that
// writes dlogits over the logits (ops/cross_entropy.h); backward_input(slot, {}) uses those.
// forward(slot, x) returns logits for an upstream gradient given to backward_input.
#pragma once
#include <memory>

#include "layers/embedding.h"
#include "layers/layer.h"
#include "layers/linear.h"
#include "layers/norm.h"

namespace ringloom::layers {

class LMHead : public Layer {
 public:
  // Untied: owns "out.weight" [vocab_size, n_embd].
  LMHead(int64_t n_embd, int64_t vocab_size, NormKind norm, float norm_eps, DType dtype, Device device);
  // Tied to an Embedding's wte (same dtype and device as the embedding).
  LMHead(const Embedding& tied, NormKind norm, float norm_eps);

  const char* kind() const override { return "LMHead"; }
  std::vector<Param> params() const override;  // norm.*, plus out.weight when untied
  Tensor forward(int slot, const Tensor& x) override;              // logits [B, T, V]
  Tensor backward_input(int slot, const Tensor& dlogits) override;  // undefined dlogits after forward_loss
  void backward_weight(int slot) override;
  Tensor infer(const Tensor& x) const override { return logits(x); }
  void release(int slot) override { slots_.release(slot); }
  std::vector<int> slots() const override { return slots_.slots(); }

  // Per-position losses [B, T] fp32 (0 where targets == ignore_index); saves the
  // gradient of sum(losses) * grad_scale with respect to the logits.
  Tensor forward_loss(int slot, const Tensor& x, const Tensor& targets, float grad_scale, int64_t ignore_index);
  // Logits [B, T, V], nothing saved.
  Tensor logits(const Tensor& x) const;
  // Per-position losses [B, T], nothing saved.
  Tensor loss(const Tensor& x, const Tensor& targets, int64_t ignore_index) const;

  bool tied() const { return tied_; }
  // The next backward_weight writes the norm's gradients and W's (its GEMM with beta = 0)
  // instead of adding; a tied W's gradient only if the embedding has not written it first
  // (Embedding::wte_grad_overwrite, shared).
  void replace_grads_next() override {
    replace_grads_ = true;
    *weight_overwrite_ = true;
  }
  const Param& weight() const { return weight_; }
  int64_t vocab_size() const { return vocab_size_; }

 private:
  struct Saved {
    NormSaved n;
    Tensor h, dlogits;  // dlogits from forward_loss, or from backward_input's argument
    NormGrads gn;
  };
  void check_x(const char* what, const Tensor& x) const;
  void check_targets(const char* what, const Tensor& x, const Tensor& targets) const;

  int64_t n_embd_, vocab_size_;
  DType dtype_;
  Device device_;
  bool tied_;
  Norm norm_;
  Param weight_;
  std::shared_ptr<bool> weight_overwrite_;  // the Embedding's when tied, else this head's
  void on_zero_grad() override {
    if (!tied_) *weight_overwrite_ = false;  // a tied one is the Embedding's to clear
  }
  SlotMap<Saved> slots_{"LMHead"};
};

}  // namespace ringloom::layers
