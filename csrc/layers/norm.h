// Norm: LayerNorm (gain and bias, GPT-2) or RMSNorm (gain only, LLaMA) over the last dim
// (ops/layernorm.h, ops/rmsnorm.h). A building block: the owning layer keeps NormSaved
// per slot. The backward computes the gain/bias gradients into per-slot float32 buffers
// (NormGrads) that the owner adds to the parameter gradients in its backward_weight.
#pragma once
#include <string>
#include <vector>

#include "layers/layer.h"

namespace ringloom::layers {

enum class NormKind { LayerNorm, RMSNorm };
const char* norm_kind_name(NormKind k);

struct NormSaved {
  Tensor x, mean, rstd;  // mean only for LayerNorm
};

struct NormGrads {
  Tensor dgamma, dbeta;  // dbeta only for LayerNorm
};

class Norm {
 public:
  Norm() = default;
  // Parameters "<name>.weight" (and "<name>.bias" for LayerNorm); gain starts at 1.
  Norm(const std::string& name, NormKind kind, int64_t dim, float eps, DType dtype, Device device);

  // y = norm(x); fills `saved` when it is not null.
  Tensor forward(const Tensor& x, NormSaved* saved) const;
  // dx from dy (plus `residual` when defined: the skip connection's gradient, added in the
  // same kernel); the parameter gradients go to fresh buffers in `grads`. y, when not null,
  // receives the forward output, bitwise (activation recomputation for one write).
  Tensor backward_input(const Tensor& dy, const NormSaved& saved, NormGrads& grads, const Tensor& residual = Tensor(),
                        Tensor* y = nullptr) const;
  // Adds the buffered gradients to the parameter gradients (copies them: accumulate false).
  void backward_weight(const NormGrads& grads, bool accumulate = true);
  void append_params(std::vector<Param>& out) const;

  NormKind kind() const { return kind_; }
  float eps() const { return eps_; }

 private:
  NormKind kind_ = NormKind::LayerNorm;
  float eps_ = 1e-5f;
  Param gamma_, beta_;
};

}  // namespace ringloom::layers
