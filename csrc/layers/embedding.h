// Embedding: token embedding wte[V, C] plus, for GPT-2, learned positions wpe[max_seq_len, C]
// (ops/embedding.h). forward takes int32 ids [B, T] and returns x [B, T, C]; there is no
// input gradient (ids are integers), so backward_input returns an undefined Tensor and
// keeps dy for backward_weight, which scatters it into dwte (and sums it into dwpe).
// T is checked against max_seq_len here even without learned positions (RoPE models), so
// a too-long sequence fails at the first layer with a message that says so.
#pragma once
#include <memory>

#include "layers/layer.h"

namespace ringloom::layers {

class Embedding : public Layer {
 public:
  Embedding(int64_t vocab_size, int64_t n_embd, int64_t max_seq_len, bool learned_positions, DType dtype,
            Device device);

  const char* kind() const override { return "Embedding"; }
  std::vector<Param> params() const override;
  Tensor forward(int slot, const Tensor& ids) override;
  Tensor backward_input(int slot, const Tensor& dy) override;
  void backward_weight(int slot) override;
  Tensor infer(const Tensor& ids) const override;
  void release(int slot) override { slots_.release(slot); }
  std::vector<int> slots() const override { return slots_.slots(); }

  const Param& wte() const { return wte_; }
  // Set by replace_grads_next (this layer's, or a tied head's, which shares it): the next
  // write of wte's gradient overwrites it, and clears the flag; later writes add. So a tied
  // gradient is replaced by whichever of the head and the embedding writes first (in a
  // model's backward, the head's GEMM, with beta = 0) instead of a zeroing pass over it.
  const std::shared_ptr<bool>& wte_grad_overwrite() const { return wte_overwrite_; }
  // Its gradients are written at the next backward_weight: wpe's zeroed then, wte's
  // through wte_grad_overwrite().
  void replace_grads_next() override {
    replace_grads_ = true;
    *wte_overwrite_ = true;
  }
  int64_t vocab_size() const { return vocab_size_; }
  int64_t n_embd() const { return n_embd_; }
  int64_t max_seq_len() const { return max_seq_len_; }
  DType dtype() const { return wte_.value.dtype(); }
  Device device() const { return wte_.value.device(); }

 private:
  struct Saved {
    Tensor ids, dy;
  };
  void check_ids(const char* what, const Tensor& ids) const;

  int64_t vocab_size_, n_embd_, max_seq_len_;
  Param wte_, wpe_;  // wpe_ undefined without learned positions
  std::shared_ptr<bool> wte_overwrite_ = std::make_shared<bool>(false);
  void on_zero_grad() override { *wte_overwrite_ = false; }
  SlotMap<Saved> slots_{"Embedding"};
};

}  // namespace ringloom::layers
