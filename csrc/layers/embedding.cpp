#include "layers/embedding.h"

#include <utility>

#include "core/check.h"
#include "ops/embedding.h"

namespace ringloom::layers {

Embedding::Embedding(int64_t vocab_size, int64_t n_embd, int64_t max_seq_len, bool learned_positions, DType dtype,
                     Device device)
    : vocab_size_(vocab_size), n_embd_(n_embd), max_seq_len_(max_seq_len) {
  RL_CHECK(vocab_size > 0 && n_embd > 0 && max_seq_len > 0, Value, "Embedding: vocab_size (", vocab_size,
           "), n_embd (", n_embd, ") and max_seq_len (", max_seq_len, ") must be positive");
  wte_ = make_param("wte.weight", {vocab_size, n_embd}, dtype, device, /*decay=*/true);
  if (learned_positions) wpe_ = make_param("wpe.weight", {max_seq_len, n_embd}, dtype, device, /*decay=*/true);
}

std::vector<Param> Embedding::params() const {
  std::vector<Param> out{wte_};
  if (wpe_.value.defined()) out.push_back(wpe_);
  return out;
}

void Embedding::check_ids(const char* what, const Tensor& ids) const {
  check_dtype(what, "ids", ids, DType::Int32);
  check_dim(what, "ids", ids, 2);
  RL_CHECK(ids.device() == device(), Value, what, ": ids (", ids.describe(), ") must be on the model's device ",
           device().str());
  RL_CHECK(ids.size(1) <= max_seq_len_, Value, what, ": sequence length ", ids.size(1),
           " exceeds the model's max_seq_len of ", max_seq_len_, " (ids ", ids.describe(), ")");
  // Token ids outside [0, vocab_size) are caught by embedding_forward with their position.
}

Tensor Embedding::infer(const Tensor& ids) const {
  check_ids("Embedding.forward", ids);
  return embedding_forward(ids, wte_.value, wpe_.value);
}

Tensor Embedding::forward(int slot, const Tensor& ids) {
  slots_.check_free(slot);
  Tensor x = infer(ids);
  slots_.store(slot, Saved{ids, Tensor()});
  return x;
}

Tensor Embedding::backward_input(int slot, const Tensor& dy) {
  Saved& s = slots_.for_backward_input(slot);
  const Shape want{s.ids.size(0), s.ids.size(1), n_embd_};
  check_shape("Embedding.backward_input", "dy", dy, want);
  RL_CHECK(dy.device() == device(), Value, "Embedding.backward_input: dy (", dy.describe(),
           ") must be on the model's device ", device().str());
  s.dy = dy;
  slots_.mark_input_done(slot);
  return Tensor();
}

void Embedding::backward_weight(int slot) {
  Saved& s = slots_.for_backward_weight(slot);
  // The kernel adds into both gradients: a replaced one is zeroed first. wte's is replaced
  // only if a tied head has not written it already in this step.
  const bool accumulate = begin_grad_writes();
  Tensor dwpe = wpe_.grad;
  Tensor dwte = wte_.grad;
  if (!accumulate && dwpe.defined()) dwpe.zero_();
  if (std::exchange(*wte_overwrite_, false)) dwte.zero_();  // begin_grad_writes gave it memory
  embedding_backward(s.ids, s.dy, dwte, dwpe);
  slots_.release(slot);
}

}  // namespace ringloom::layers
