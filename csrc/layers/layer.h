// Layers: forward/backward of whole pieces of a transformer, built from the ops.
//
// A layer owns its parameters and their gradients and, per micro-batch, the activations
// its backward needs. Micro-batches are named by an integer `slot`, so a pipeline schedule
// can run several forwards before the matching backwards (1F1B, interleaved, zero bubble).
// Life of a slot:
//   forward(slot, x) -> y              saves what backward needs under `slot`
//   backward_input(slot, dy) -> dx     input gradient; keeps what the weight half needs
//   backward_weight(slot)              accumulates every parameter gradient, frees the slot
//   backward(slot, dy)                 = backward_input + backward_weight
// The split is what zero-bubble schedules (Qi et al. 2023) need: the weight-gradient GEMMs
// can run later, in what would otherwise be a pipeline bubble. Parameter gradients change
// only in backward_weight (norm gains too: their gradient is computed with dx into a
// per-slot buffer and added then), so a data-parallel reducer may start on a layer's
// gradients as soon as its last backward_weight returns.
//
// References, not copies: forward keeps a reference to x (and backward_input to dy) until
// the slot is freed. Callers must not overwrite those tensors in place before then (a
// pipeline that receives activations into reused buffers must hand the layer a fresh one).
//
// Dtypes: parameters are in the layer's dtype (float32 on the CPU, bfloat16 on a GPU);
// gradients are always float32.
#pragma once
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace ringloom::layers {

struct Param {
  std::string name;  // local to the layer ("attn.qkv.weight"); models prefix it
  Tensor value;
  Tensor grad;       // float32, same shape as value
  bool decay = true; // weight decay applies: matrices and embeddings yes, norm gains and biases no
};

// A parameter of `shape` in `dtype`, with a float32 zero gradient, on `device`.
Param make_param(const std::string& name, const Shape& shape, DType dtype, Device device, bool decay);

class Layer {
 public:
  virtual ~Layer() = default;
  virtual const char* kind() const = 0;  // "Embedding", "TransformerBlock", "LMHead"
  virtual std::vector<Param> params() const = 0;

  virtual Tensor forward(int slot, const Tensor& x) = 0;
  virtual Tensor backward_input(int slot, const Tensor& dy) = 0;
  virtual void backward_weight(int slot) = 0;
  Tensor backward(int slot, const Tensor& dy) {
    Tensor dx = backward_input(slot, dy);
    backward_weight(slot);
    return dx;
  }
  // Forward without saving anything (evaluation, generation).
  virtual Tensor infer(const Tensor& x) const = 0;

  // Zeroes every gradient (giving released ones memory again).
  void zero_grad();
  // Frees the gradients' memory until the next backward_weight or zero_grad gives it back
  // (torch's zero_grad(set_to_none=True)): between an optimizer step and the next backward
  // the caching allocator lends those bytes to the forward's activations, so a step's peak
  // holds the activations and only the gradients written so far, not every gradient.
  // Meanwhile .grad has no memory (has_memory false; an op given it refuses).
  void release_grads();
  // The gradients of the next backward replace what .grad holds instead of adding to it:
  // zero_grad() without its pass over every gradient where the layer can write them in
  // place (its first backward_weight then writes instead of accumulating; later ones, e.g.
  // further micro-batches in flight, add). By default, zero_grad() now.
  virtual void replace_grads_next() { zero_grad(); }
  virtual void release(int slot) = 0;     // drop a slot's activations (no-op if unused)
  virtual std::vector<int> slots() const = 0;  // slots holding activations, ascending

 protected:
  // Called first by every backward_weight: true when its gradients are to be added to .grad,
  // false when written in place (replace_grads_next() was called; the flag is cleared).
  // Released gradients get memory again: zeroed where they will be added to, left
  // uninitialised where the layer overwrites them.
  bool begin_grad_writes();
  // A released gradient gets memory again, zeroed when `zero` (it will be added to).
  static void restore_grad(Tensor grad, bool zero);
  bool replace_grads_ = false;  // set by a replace_grads_next() override
  // zero_grad() calls this after zeroing: a layer that keeps more write-once state than
  // replace_grads_ clears it here.
  virtual void on_zero_grad() {}
};

// Per-slot saved state with the checks every layer needs: a forward may not reuse a
// live slot, backward_input needs a forward, backward_weight needs backward_input. A layer
// validates and computes first and changes the map last, so a call that throws leaves
// the slot as it was.
template <typename Saved>
class SlotMap {
 public:
  explicit SlotMap(const char* layer) : layer_(layer) {}

  void check_free(int slot) const {
    RL_CHECK(map_.find(slot) == map_.end(), Runtime, layer_, ".forward: slot ", slot,
             " still holds activations of an earlier forward; run its backward or release(", slot, ") first");
  }
  void store(int slot, Saved saved) {
    check_free(slot);
    map_[slot] = Entry{Stage::Forwarded, std::move(saved)};
  }
  // The slot's state for backward_input (it must have run forward only).
  Saved& for_backward_input(int slot) {
    Entry& e = find(slot, "backward_input");
    RL_CHECK(e.stage == Stage::Forwarded, Runtime, layer_, ".backward_input: slot ", slot,
             " already ran backward_input; call backward_weight(", slot, ") next");
    return e.saved;
  }
  void mark_input_done(int slot) { find(slot, "backward_input").stage = Stage::InputDone; }
  // The slot's state for backward_weight (it must have run backward_input).
  Saved& for_backward_weight(int slot) {
    Entry& e = find(slot, "backward_weight");
    RL_CHECK(e.stage == Stage::InputDone, Runtime, layer_, ".backward_weight: slot ", slot,
             " has not run backward_input yet");
    return e.saved;
  }
  const Saved* peek(int slot) const {
    auto it = map_.find(slot);
    return it == map_.end() ? nullptr : &it->second.saved;
  }
  void release(int slot) { map_.erase(slot); }
  std::vector<int> slots() const;

 private:
  enum class Stage { Forwarded, InputDone };
  struct Entry {
    Stage stage = Stage::Forwarded;
    Saved saved;
  };
  Entry& find(int slot, const char* what) {
    auto it = map_.find(slot);
    RL_CHECK(it != map_.end(), Runtime, layer_, ".", what, ": slot ", slot, " has no activations (no forward on it, "
             "or it was already released)");
    return it->second;
  }
  const char* layer_;
  std::unordered_map<int, Entry> map_;
};

std::vector<int> sorted_slots(std::vector<int> keys);

template <typename Saved>
std::vector<int> SlotMap<Saved>::slots() const {
  std::vector<int> keys;
  keys.reserve(map_.size());
  for (const auto& kv : map_) keys.push_back(kv.first);
  return sorted_slots(std::move(keys));
}

}  // namespace ringloom::layers
