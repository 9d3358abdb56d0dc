#include "layers/transformer_block.h"

#include <unordered_set>

#include "core/check.h"
#include "core/size.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/rope.h"

namespace ringloom::layers {

const char* mlp_kind_name(MlpKind k) { return k == MlpKind::GELU ? "gelu" : "swiglu"; }

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::None: return "none";
    case Recompute::Selective: return "selective";
    case Recompute::Full: return "full";
  }
  return "?";
}

Recompute parse_recompute(const std::string& name) {
  if (name == "none") return Recompute::None;
  if (name == "selective") return Recompute::Selective;
  if (name == "full") return Recompute::Full;
  fail(ErrorKind::Value, "recompute must be none, selective or full, got '", name, "'");
}

void BlockConfig::validate() const {
  const char* op = "TransformerBlock";
  RL_CHECK(n_embd > 0 && n_head > 0 && n_kv_head > 0 && ffn_hidden > 0, Value, op,
           ": n_embd (", n_embd, "), n_head (", n_head, "), n_kv_head (", n_kv_head, ") and ffn_hidden (",
           ffn_hidden, ") must be positive");
  RL_CHECK(n_embd % n_head == 0, Value, op, ": n_embd (", n_embd, ") must be a multiple of n_head (", n_head, ")");
  RL_CHECK(n_head % n_kv_head == 0, Value, op, ": n_head (", n_head, ") must be a multiple of n_kv_head (",
           n_kv_head, ")");
  RL_CHECK(!rope || head_dim() % 2 == 0, Value, op, ": RoPE needs an even head dim, got n_embd/n_head = ",
           head_dim());
  RL_CHECK(!rope || rope_base > 0, Value, op, ": rope_base must be positive, got ", rope_base);
  RL_CHECK(norm_eps > 0, Value, op, ": norm_eps must be positive, got ", norm_eps);
}

TransformerBlock::TransformerBlock(const BlockConfig& config, DType dtype, Device device)
    : cfg_(config), dtype_(dtype), device_(device) {
  cfg_.validate();
  const int64_t C = cfg_.n_embd, D = cfg_.head_dim();
  const char* op = "TransformerBlock";
  const int64_t qkv_out = checked_mul(checked_add(cfg_.n_head, checked_mul(2, cfg_.n_kv_head, op), op), D, op);
  const int64_t fc_out = cfg_.mlp == MlpKind::SwiGLU ? checked_mul(2, cfg_.ffn_hidden, op) : cfg_.ffn_hidden;
  ln1_ = Norm("ln1", cfg_.norm, C, cfg_.norm_eps, dtype, device);
  qkv_ = Linear("attn.qkv", C, qkv_out, cfg_.bias, dtype, device);
  proj_ = Linear("attn.proj", cfg_.n_head * D, C, cfg_.bias, dtype, device);
  ln2_ = Norm("ln2", cfg_.norm, C, cfg_.norm_eps, dtype, device);
  fc_ = Linear("mlp.fc", C, fc_out, cfg_.bias, dtype, device);
  down_ = Linear("mlp.proj", cfg_.ffn_hidden, C, cfg_.bias, dtype, device);
}

std::vector<Param> TransformerBlock::params() const {
  std::vector<Param> out;
  ln1_.append_params(out);
  qkv_.append_params(out);
  proj_.append_params(out);
  ln2_.append_params(out);
  fc_.append_params(out);
  down_.append_params(out);
  return out;
}

void TransformerBlock::check_x(const char* what, const Tensor& x) const {
  check_dim(what, "x", x, 3);
  RL_CHECK(x.size(2) == cfg_.n_embd, Value, what, ": x must be [B, T, ", cfg_.n_embd, "], got ", x.describe());
  RL_CHECK(x.dtype() == dtype_ && x.device() == device_, Type, what, ": x (", x.describe(),
           ") must match the layer's dtype and device (", dtype_name(dtype_), " on ", device_.str(), ")");
}

Tensor TransformerBlock::run_forward(const Tensor& x, Saved* s) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t Hq = cfg_.n_head, Hkv = cfg_.n_kv_head, D = cfg_.head_dim();

  // Attention half.
  Tensor h1 = ln1_.forward(x, s ? &s->n1 : nullptr);
  Tensor qkv = qkv_.forward(h1).reshape({B, T, Hq + 2 * Hkv, D});
  if (cfg_.rope) rope_forward(qkv, Hq + Hkv, cfg_.rope_base, 0);
  auto [att, lse] = [&] {
    AttentionBackendScope backend(attention_);
    return attention_forward(qkv, Hq, Hkv, /*causal=*/true, /*scale=*/0.0f);
  }();
  Tensor att_flat = att.reshape({B, T, Hq * D});
  Tensor x2 = proj_.forward(att_flat, /*residual=*/x);

  // MLP half.
  Tensor h2 = ln2_.forward(x2, s ? &s->n2 : nullptr);
  Tensor f = fc_.forward(h2);
  Tensor g = cfg_.mlp == MlpKind::GELU ? gelu_forward(f) : swiglu_forward(f);
  Tensor y = down_.forward(g, /*residual=*/x2);

  if (s) {
    s->qkv = qkv;  // after RoPE: attention_backward wants the q and k it saw
    s->att = att;
    s->lse = lse;
    s->f = f;
    s->h1 = h1;
    s->att_flat = att_flat;
    s->h2 = h2;
    s->g = g;
  }
  return y;
}

Tensor TransformerBlock::infer(const Tensor& x) const {
  check_x("TransformerBlock.forward", x);
  return run_forward(x, nullptr);
}

Tensor TransformerBlock::forward(int slot, const Tensor& x) {
  check_x("TransformerBlock.forward", x);
  slots_.check_free(slot);
  Saved s;
  s.mode = recompute_;
  Tensor y = run_forward(x, recompute_ == Recompute::Full ? nullptr : &s);
  s.x = x;
  if (recompute_ == Recompute::Selective) s.h1 = s.h2 = s.g = Tensor();  // redone in backward_input
  slots_.store(slot, std::move(s));
  return y;
}

Tensor TransformerBlock::backward_input(int slot, const Tensor& dy) {
  const char* what = "TransformerBlock.backward_input";
  Saved& s = slots_.for_backward_input(slot);
  check_shape(what, "dy", dy, s.x.shape());
  check_same(what, {{"dy", &dy}, {"x", &s.x}}, true);
  if (s.mode == Recompute::Full) run_forward(s.x, &s);  // everything `none` would have kept
  const int64_t B = dy.size(0), T = dy.size(1);
  const int64_t Hq = cfg_.n_head, Hkv = cfg_.n_kv_head, D = cfg_.head_dim();
  NormGrads g1, g2;
  // Selective recompute: the activation's and the norms' backward kernels write the dropped
  // forward outputs back into the slot for backward_weight (same kernels' math, same bits).
  const bool redo = s.mode == Recompute::Selective;

  // MLP half: y = x2 + down(act(fc(norm2(x2)))), so dx2 = dy + the path through the MLP.
  Tensor dg = down_.backward_input(dy);
  Tensor* g_out = redo ? &s.g : nullptr;
  Tensor df = cfg_.mlp == MlpKind::GELU ? gelu_backward(dg, s.f, g_out) : swiglu_backward(dg, s.f, g_out);
  Tensor dh2 = fc_.backward_input(df);
  Tensor dx2 = ln2_.backward_input(dh2, s.n2, g2, /*residual=*/dy, redo ? &s.h2 : nullptr);

  // Attention half: x2 = x + proj(attn(rope(qkv(norm1(x))))).
  Tensor datt = proj_.backward_input(dx2).reshape({B, T, Hq, D});
  Tensor dqkv = [&] {
    AttentionBackendScope backend(attention_);
    return attention_backward(datt, s.qkv, s.att, s.lse, Hq, Hkv, /*causal=*/true, /*scale=*/0.0f,
                              deterministic_attention_);
  }();
  if (cfg_.rope) rope_backward(dqkv, Hq + Hkv, cfg_.rope_base, 0);  // the inverse rotation
  Tensor dqkv_flat = dqkv.reshape({B, T, (Hq + 2 * Hkv) * D});
  Tensor dh1 = qkv_.backward_input(dqkv_flat);
  Tensor dx = ln1_.backward_input(dh1, s.n1, g1, /*residual=*/dx2, redo ? &s.h1 : nullptr);

  // Keep what the weight half needs; drop the rest now.
  s.x = Tensor();
  s.d_qkv = dqkv_flat;
  s.d_proj = dx2;
  s.d_fc = df;
  s.d_down = dy;
  s.g1 = g1;
  s.g2 = g2;
  s.n1 = {};
  s.n2 = {};
  s.qkv = s.att = s.lse = s.f = Tensor();
  slots_.mark_input_done(slot);
  return dx;
}

void TransformerBlock::backward_weight(int slot) {
  Saved& s = slots_.for_backward_weight(slot);
  const bool acc = begin_grad_writes();
  qkv_.backward_weight(s.d_qkv, s.h1, acc);
  proj_.backward_weight(s.d_proj, s.att_flat, acc);
  fc_.backward_weight(s.d_fc, s.h2, acc);
  down_.backward_weight(s.d_down, s.g, acc);
  ln1_.backward_weight(s.g1, acc);
  ln2_.backward_weight(s.g2, acc);
  slots_.release(slot);
}

size_t TransformerBlock::saved_bytes(int slot) const {
  const Saved* s = slots_.peek(slot);
  if (!s) return 0;
  std::unordered_set<const void*> seen;
  size_t total = 0;
  for (const Tensor* t : {&s->x, &s->n1.x, &s->n1.mean, &s->n1.rstd, &s->n2.x, &s->n2.mean, &s->n2.rstd, &s->qkv,
                          &s->att, &s->lse, &s->f, &s->h1, &s->att_flat, &s->h2, &s->g, &s->d_qkv, &s->d_proj,
                          &s->d_fc, &s->d_down, &s->g1.dgamma, &s->g1.dbeta, &s->g2.dgamma, &s->g2.dbeta}) {
    if (t->defined() && seen.insert(t->storage().get()).second) total += t->storage()->nbytes;
  }
  return total;
}

}  // namespace ringloom::layers
