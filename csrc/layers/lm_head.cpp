#include "layers/lm_head.h"

#include <utility>

#include "core/check.h"
#include "ops/cross_entropy.h"
#include "ops/matmul.h"

namespace ringloom::layers {

LMHead::LMHead(int64_t n_embd, int64_t vocab_size, NormKind norm, float norm_eps, DType dtype, Device device)
    : n_embd_(n_embd), vocab_size_(vocab_size), dtype_(dtype), device_(device), tied_(false) {
  RL_CHECK(n_embd > 0 && vocab_size > 0, Value, "LMHead: n_embd (", n_embd, ") and vocab_size (", vocab_size,
           ") must be positive");
  norm_ = Norm("norm", norm, n_embd, norm_eps, dtype, device);
  weight_ = make_param("out.weight", {vocab_size, n_embd}, dtype, device, /*decay=*/true);
  weight_overwrite_ = std::make_shared<bool>(false);
}

LMHead::LMHead(const Embedding& tied, NormKind norm, float norm_eps)
    : n_embd_(tied.n_embd()), vocab_size_(tied.vocab_size()), dtype_(tied.dtype()), device_(tied.device()),
      tied_(true) {
  norm_ = Norm("norm", norm, n_embd_, norm_eps, dtype_, device_);
  weight_ = tied.wte();  // shares the value and grad tensors
  weight_overwrite_ = tied.wte_grad_overwrite();
}

std::vector<Param> LMHead::params() const {
  std::vector<Param> out;
  norm_.append_params(out);
  if (!tied_) out.push_back(weight_);
  return out;
}

void LMHead::check_x(const char* what, const Tensor& x) const {
  check_dim(what, "x", x, 3);
  RL_CHECK(x.size(2) == n_embd_, Value, what, ": x must be [B, T, ", n_embd_, "], got ", x.describe());
  RL_CHECK(x.dtype() == dtype_ && x.device() == device_, Type, what, ": x (", x.describe(),
           ") must match the layer's dtype and device (", dtype_name(dtype_), " on ", device_.str(), ")");
}

void LMHead::check_targets(const char* what, const Tensor& x, const Tensor& targets) const {
  check_dtype(what, "targets", targets, DType::Int32);
  check_shape(what, "targets", targets, {x.size(0), x.size(1)});
  RL_CHECK(targets.device() == device_, Value, what, ": targets (", targets.describe(),
           ") must be on the model's device ", device_.str());
}

Tensor LMHead::logits(const Tensor& x) const {
  check_x("LMHead.logits", x);
  return matmul_forward(norm_.forward(x, nullptr), weight_.value, Tensor());
}

Tensor LMHead::loss(const Tensor& x, const Tensor& targets, int64_t ignore_index) const {
  check_x("LMHead.loss", x);
  check_targets("LMHead.loss", x, targets);
  const int64_t B = x.size(0), T = x.size(1);
  Tensor lg = matmul_forward(norm_.forward(x, nullptr), weight_.value, Tensor()).reshape({B * T, vocab_size_});
  return cross_entropy_forward(lg, targets.reshape({B * T}), ignore_index).reshape({B, T});
}

Tensor LMHead::forward(int slot, const Tensor& x) {
  check_x("LMHead.forward", x);
  slots_.check_free(slot);
  Saved s;
  s.h = norm_.forward(x, &s.n);
  Tensor lg = matmul_forward(s.h, weight_.value, Tensor());
  slots_.store(slot, std::move(s));
  return lg;
}

Tensor LMHead::forward_loss(int slot, const Tensor& x, const Tensor& targets, float grad_scale,
                            int64_t ignore_index) {
  const char* what = "LMHead.forward_loss";
  check_x(what, x);
  check_targets(what, x, targets);
  slots_.check_free(slot);
  const int64_t B = x.size(0), T = x.size(1);
  Saved s;
  s.h = norm_.forward(x, &s.n);
  Tensor lg = matmul_forward(s.h, weight_.value, Tensor()).reshape({B * T, vocab_size_});
  Tensor losses = cross_entropy_forward_backward(lg, targets.reshape({B * T}), ignore_index, grad_scale);
  s.dlogits = lg.reshape({B, T, vocab_size_});  // now holds d(grad_scale * sum losses)/dlogits
  slots_.store(slot, std::move(s));
  return losses.reshape({B, T});
}

Tensor LMHead::backward_input(int slot, const Tensor& dlogits) {
  const char* what = "LMHead.backward_input";
  Saved& s = slots_.for_backward_input(slot);
  const Shape want{s.n.x.size(0), s.n.x.size(1), vocab_size_};
  Tensor dl = s.dlogits;
  if (dl.defined()) {
    RL_CHECK(!dlogits.defined(), Value, what, ": slot ", slot, " ran forward_loss, whose gradient is already "
             "saved; pass None as dlogits (got ", dlogits.describe(), ")");
  } else {
    RL_CHECK(dlogits.defined(), Value, what, ": slot ", slot, " ran forward (not forward_loss); dlogits of shape ",
             shape_str(want), " is required");
    check_shape(what, "dlogits", dlogits, want);
    check_same(what, {{"dlogits", &dlogits}, {"x", &s.n.x}}, true);
    dl = dlogits;
  }
  NormGrads gn;
  Tensor dh = matmul_backward_input(dl, weight_.value);
  Tensor dx = norm_.backward_input(dh, s.n, gn);
  s.dlogits = dl;
  s.gn = gn;
  s.n = {};
  slots_.mark_input_done(slot);
  return dx;
}

void LMHead::backward_weight(int slot) {
  Saved& s = slots_.for_backward_weight(slot);
  const bool accumulate = begin_grad_writes();
  const bool overwrite_w = std::exchange(*weight_overwrite_, false);
  restore_grad(weight_.grad, /*zero=*/!overwrite_w);  // a tied W's gradient is not in params()
  Tensor no_bias;
  matmul_backward_weight(s.dlogits, s.h, weight_.grad, no_bias, /*accumulate=*/!overwrite_w);
  norm_.backward_weight(s.gn, accumulate);
  slots_.release(slot);
}

}  // namespace ringloom::layers
