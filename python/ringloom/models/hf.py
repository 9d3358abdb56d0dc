"""Hugging Face interop: GPT-2 and LLaMA weights in the `transformers` safetensors layout.

    export_hf(model, "dir")        -> dir/model.safetensors + dir/config.json
    model = import_hf("dir")       (or a .safetensors file with config=...)

Files only: nothing is downloaded. The layouts (transformers' modeling_gpt2.py and
modeling_llama.py):

GPT-2 (GPT2LMHeadModel). Linear layers are ``Conv1D`` modules whose weight is [in, out]
(y = x W + b), the transpose of ours ([out, in], y = x W^T + b):
    transformer.wte.weight [V, C]      transformer.wpe.weight [P, C]
    transformer.h.{i}.ln_1.{weight,bias}          transformer.h.{i}.ln_2.{weight,bias}
    transformer.h.{i}.attn.c_attn.{weight [C, 3C], bias}    (q | k | v along the output dim,
                                                              like our packed qkv)
    transformer.h.{i}.attn.c_proj.{weight [C, C], bias}
    transformer.h.{i}.mlp.c_fc.{weight [C, F], bias}   transformer.h.{i}.mlp.c_proj.{weight [F, C], bias}
    transformer.ln_f.{weight,bias}     lm_head.weight (tied to wte: not stored)
  OpenAI's original files have no ``transformer.`` prefix and carry causal-mask buffers
  ``h.{i}.attn.bias`` / ``.masked_bias``; both are accepted on import.

LLaMA (LlamaForCausalLM). Linear weights are [out, in] as ours; q/k/v and gate/up are
separate where ours are packed (qkv rows: Hq*D queries | Hkv*D keys | Hkv*D values; fc rows:
F gate | F up), so export splits and import concatenates:
    model.embed_tokens.weight [V, C]
    model.layers.{i}.input_layernorm.weight        model.layers.{i}.post_attention_layernorm.weight
    model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
    model.layers.{i}.mlp.{gate,up,down}_proj.weight
    model.norm.weight      lm_head.weight [V, C] (absent when tie_word_embeddings)
  RoPE: transformers' LLaMA rotates halves (x1, x2) = (x[:D/2], x[D/2:]), the convention of
  our rope op, so no permutation of q/k rows is needed (Meta's original checkpoints pair
  adjacent dims instead; transformers' conversion script permutes them into this layout).
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..checkpoint import atomic_write_text, load_safetensors, save_safetensors
from ..checkpoint.safe_files import member_path, read_bounded
from .config import ModelConfig

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
_MAX_JSON = 64 << 20   # config.json and the shard index are a few kB to a few MB


# ---------------------------------------------------------------------------------- configs
def hf_config(config: ModelConfig) -> dict[str, Any]:
    """The transformers config.json for ``config``."""
    c = config
    if c.arch == "gpt2":
        if c.n_kv_head != c.n_head:
            raise ValueError(f"export_hf: GPT-2 has no grouped-query attention (n_kv_head {c.n_kv_head} != "
                             f"n_head {c.n_head})")
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
                "n_positions": c.max_seq_len, "n_ctx": c.max_seq_len, "n_embd": c.n_embd, "n_layer": c.n_layer,
                "n_head": c.n_head, "n_inner": c.ffn_hidden, "activation_function": "gelu_new",
                "layer_norm_epsilon": c.norm_eps, "tie_word_embeddings": c.tie_embeddings,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "torch_dtype": "float32"}
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": c.vocab_size,
            "hidden_size": c.n_embd, "intermediate_size": c.ffn_hidden, "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head, "head_dim": c.head_dim,
            "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_base,
            "rope_scaling": None, "tie_word_embeddings": c.tie_embeddings, "hidden_act": "silu",
            "attention_bias": c.bias, "mlp_bias": c.bias, "attention_dropout": 0.0, "torch_dtype": "float32"}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from a transformers config.json dict (GPT-2 or LLaMA); ValueError for
    features ringloom does not implement and for a config lacking a field or holding one of
    the wrong type."""
    if not isinstance(hf, dict):
        raise ValueError(f"import_hf: the config is a {type(hf).__name__}, not a JSON object")
    try:
        return _config_from_hf(hf)
    except KeyError as e:
        raise ValueError(f"import_hf: the {hf.get('model_type')} config has no {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(f"import_hf: a config field has the wrong type ({e})") from None


def _config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    kind = hf.get("model_type")
    if kind == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"import_hf: GPT-2 activation {act!r} is not supported (ringloom's GELU is the "
                             "tanh approximation, gelu_new)")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                raise ValueError(f"import_hf: GPT-2 option {flag} is not supported")
        return ModelConfig(arch="gpt2", vocab_size=hf["vocab_size"], n_layer=hf["n_layer"], n_head=hf["n_head"],
                           n_embd=hf["n_embd"], ffn_hidden=hf.get("n_inner") or 4 * hf["n_embd"],
                           max_seq_len=hf["n_positions"], norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                           tie_embeddings=hf.get("tie_word_embeddings", True), bias=True)
    if kind == "llama":
        if hf.get("rope_scaling"):
            raise ValueError(f"import_hf: rope_scaling {hf['rope_scaling']} is not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"import_hf: LLaMA activation {hf['hidden_act']!r} is not supported (SwiGLU uses silu)")
        if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
            raise ValueError("import_hf: attention_bias and mlp_bias differ; ringloom has one bias switch")
        C, H = hf["hidden_size"], hf["num_attention_heads"]
        if not (isinstance(C, int) and isinstance(H, int) and H > 0):
            raise ValueError(f"import_hf: hidden_size {C!r} and num_attention_heads {H!r} must be positive integers")
        if hf.get("head_dim") not in (None, C // H):
            raise ValueError(f"import_hf: head_dim {hf['head_dim']} != hidden_size / num_attention_heads "
                             f"({C // H}) is not supported")
        return ModelConfig(arch="llama", vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=H,
                           n_kv_head=hf.get("num_key_value_heads") or H, n_embd=C,
                           ffn_hidden=hf["intermediate_size"], max_seq_len=hf["max_position_embeddings"],
                           norm_eps=hf.get("rms_norm_eps", 1e-6), rope_base=float(hf.get("rope_theta", 10000.0)),
                           tie_embeddings=hf.get("tie_word_embeddings", False),
                           bias=bool(hf.get("attention_bias", False)))
    raise ValueError(f"import_hf: model_type {kind!r} is not supported (gpt2 or llama)")


# ---------------------------------------------------------------------------------- tensors
def _gpt2_pairs(c: ModelConfig) -> list[tuple[str, str, bool]]:
    """(our name, HF name, transposed) for every GPT-2 tensor."""
    pairs = [("embedding.wte.weight", "transformer.wte.weight", False),
             ("embedding.wpe.weight", "transformer.wpe.weight", False)]
    for i in range(c.n_layer):
        b, h = f"blocks.{i}", f"transformer.h.{i}"
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            pairs += [(f"{b}.{ours}.weight", f"{h}.{theirs}.weight", False),
                      (f"{b}.{ours}.bias", f"{h}.{theirs}.bias", False)]
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"),
                             ("mlp.proj", "mlp.c_proj")):
            pairs += [(f"{b}.{ours}.weight", f"{h}.{theirs}.weight", True),
                      (f"{b}.{ours}.bias", f"{h}.{theirs}.bias", False)]
    pairs += [("head.norm.weight", "transformer.ln_f.weight", False),
              ("head.norm.bias", "transformer.ln_f.bias", False)]
    if not c.tie_embeddings:
        pairs.append(("head.out.weight", "lm_head.weight", False))
    return pairs


def to_hf(state: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """Our state dict (Model.state_dict()) -> HF tensors, same dtype."""
    c = config
    out: dict[str, np.ndarray] = {}
    if c.arch == "gpt2":
        hf_config(c)  # validates
        for ours, theirs, transposed in _gpt2_pairs(c):
            if ours not in state:  # a bias-free GPT-2: HF's Conv1D always has one, zero is the same model
                shape = state[ours.replace(".bias", ".weight")].shape[0]
                out[theirs] = np.zeros(shape, dtype=np.float32)
                continue
            a = state[ours]
            out[theirs] = np.ascontiguousarray(a.T if transposed else a)
        return out
    D, F = c.head_dim, c.ffn_hidden
    q_rows, kv_rows = c.n_head * D, c.n_kv_head * D
    out["model.embed_tokens.weight"] = state["embedding.wte.weight"]
    for i in range(c.n_layer):
        b, h = f"blocks.{i}", f"model.layers.{i}"
        out[f"{h}.input_layernorm.weight"] = state[f"{b}.ln1.weight"]
        out[f"{h}.post_attention_layernorm.weight"] = state[f"{b}.ln2.weight"]
        suffixes = (".weight", ".bias") if c.bias else (".weight",)
        for sfx in suffixes:
            qkv = state[f"{b}.attn.qkv{sfx}"]
            out[f"{h}.self_attn.q_proj{sfx}"] = qkv[:q_rows]
            out[f"{h}.self_attn.k_proj{sfx}"] = qkv[q_rows:q_rows + kv_rows]
            out[f"{h}.self_attn.v_proj{sfx}"] = qkv[q_rows + kv_rows:]
            out[f"{h}.self_attn.o_proj{sfx}"] = state[f"{b}.attn.proj{sfx}"]
            fc = state[f"{b}.mlp.fc{sfx}"]
            out[f"{h}.mlp.gate_proj{sfx}"] = fc[:F]
            out[f"{h}.mlp.up_proj{sfx}"] = fc[F:]
            out[f"{h}.mlp.down_proj{sfx}"] = state[f"{b}.mlp.proj{sfx}"]
    out["model.norm.weight"] = state["head.norm.weight"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = state["head.out.weight"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _take(hf: dict[str, np.ndarray], name: str, used: set[str]) -> np.ndarray:
    if name not in hf:
        raise ValueError(f"import_hf: tensor {name!r} is missing from the Hugging Face weights")
    used.add(name)
    return np.asarray(hf[name], dtype=np.float32)


def from_hf(hf: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """HF tensors -> our state dict (float32). Unknown tensors are an error (a wrong layout
    must not load silently); GPT-2's causal-mask buffers and a tied lm_head are skipped."""
    c = config
    used: set[str] = set()
    state: dict[str, np.ndarray] = {}
    if c.arch == "gpt2":
        if not any(k.startswith("transformer.") for k in hf):  # OpenAI's files: no prefix
            hf = {(k if k.startswith("lm_head.") else "transformer." + k): v for k, v in hf.items()}
        for ours, theirs, transposed in _gpt2_pairs(c):
            a = _take(hf, theirs, used)
            state[ours] = np.ascontiguousarray(a.T if transposed else a)
        ignorable = [k for k in hf if k.endswith((".attn.bias", ".attn.masked_bias"))]
    else:
        state["embedding.wte.weight"] = _take(hf, "model.embed_tokens.weight", used)
        for i in range(c.n_layer):
            b, h = f"blocks.{i}", f"model.layers.{i}"
            state[f"{b}.ln1.weight"] = _take(hf, f"{h}.input_layernorm.weight", used)
            state[f"{b}.ln2.weight"] = _take(hf, f"{h}.post_attention_layernorm.weight", used)
            for sfx in (".weight", ".bias") if c.bias else (".weight",):
                state[f"{b}.attn.qkv{sfx}"] = np.concatenate(
                    [_take(hf, f"{h}.self_attn.{p}_proj{sfx}", used) for p in "qkv"], axis=0)
                state[f"{b}.attn.proj{sfx}"] = _take(hf, f"{h}.self_attn.o_proj{sfx}", used)
                state[f"{b}.mlp.fc{sfx}"] = np.concatenate(
                    [_take(hf, f"{h}.mlp.{p}_proj{sfx}", used) for p in ("gate", "up")], axis=0)
                state[f"{b}.mlp.proj{sfx}"] = _take(hf, f"{h}.mlp.down_proj{sfx}", used)
        state["head.norm.weight"] = _take(hf, "model.norm.weight", used)
        if not c.tie_embeddings:
            state["head.out.weight"] = _take(hf, "lm_head.weight", used)
        ignorable = [k for k in hf if k.endswith("rotary_emb.inv_freq")]  # a buffer in older files
    if c.tie_embeddings and "lm_head.weight" in hf:
        if not np.array_equal(np.asarray(hf["lm_head.weight"], np.float32), state["embedding.wte.weight"]):
            raise ValueError("import_hf: tie_word_embeddings is set but lm_head.weight differs from the token "
                             "embedding")
        used.add("lm_head.weight")
    unknown = sorted(set(hf) - used - set(ignorable))
    if unknown:
        raise ValueError(f"import_hf: unexpected tensors {unknown[:5]}{'...' if len(unknown) > 5 else ''} "
                         f"(not part of a {c.arch} model with this config)")
    return state


# ---------------------------------------------------------------------------------- files
def export_hf(model: Any, out_dir: str, dtype: Any = np.float32, overwrite: bool = False) -> str:
    """Write ``out_dir``/model.safetensors (HF names, ``dtype``: float32, float16 or
    ml_dtypes.bfloat16) and config.json, loadable with transformers'
    AutoModelForCausalLM.from_pretrained(out_dir). Returns the weights' path. Existing
    files of those names (e.g. a ``ringloom train --out`` directory's own model) are
    replaced only with ``overwrite=True``; otherwise FileExistsError."""
    existing = [n for n in (WEIGHTS, CONFIG) if os.path.lexists(os.path.join(out_dir, n))]
    if existing and not overwrite:
        raise FileExistsError(f"export_hf: {out_dir} already holds {', '.join(existing)}; pass overwrite=True "
                              "to replace them")
    cfg = dict(hf_config(model.config))
    tensors = to_hf(model.state_dict(), model.config)
    dtype = np.dtype(dtype)
    if dtype != np.float32:
        tensors = {k: v.astype(dtype) for k, v in tensors.items()}
        cfg["torch_dtype"] = {"float16": "float16", "bfloat16": "bfloat16"}.get(dtype.name, dtype.name)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, WEIGHTS)
    save_safetensors(path, tensors, metadata={"format": "pt"})  # what transformers checks for
    atomic_write_text(os.path.join(out_dir, CONFIG), json.dumps(cfg, indent=2))
    return path


def _read_json(path: str) -> dict:
    try:
        data = json.loads(read_bounded(path, _MAX_JSON))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def read_hf_weights(path: str) -> dict[str, np.ndarray]:
    """A model.safetensors file, or a directory with one (or with a sharded
    model.safetensors.index.json)."""
    if os.path.isdir(path):
        index = os.path.join(path, INDEX)
        if os.path.exists(index):
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: no 'weight_map' object")
            # Shard names come from a file: each must name a regular file inside `path`.
            shards = sorted(set(member_path(path, s, index) for s in weight_map.values()))
            out: dict[str, np.ndarray] = {}
            for s in shards:
                out.update(load_safetensors(s)[0])
            return out
        path = os.path.join(path, WEIGHTS)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found (expected a Hugging Face model.safetensors)")
    return load_safetensors(path)[0]


def import_hf(path: str, config: ModelConfig | dict | None = None, device: str = "cpu", dtype: Any = None) -> Any:
    """Build a ringloom Model from Hugging Face weights. ``path``: a directory with
    config.json and model.safetensors (or a sharded index), or a .safetensors file with
    ``config`` given (a ModelConfig, or a transformers config dict)."""
    from .model import build_model

    if config is None:
        cpath = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), CONFIG)
        if not os.path.exists(cpath):
            raise FileNotFoundError(f"{cpath} not found: pass config= for a bare .safetensors file")
        config = _read_json(cpath)
    if isinstance(config, dict):
        config = config_from_hf(config)
    state = from_hf(read_hf_weights(path), config)
    model = build_model(config, device=device, dtype=dtype)
    model.load_state_dict(state)  # shapes are checked there, with the names involved
    return model
