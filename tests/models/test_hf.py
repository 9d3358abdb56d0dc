"""Hugging Face interop: export -> file -> import round trips bit for bit; the exported file
means the same model to a float64 forward written against the HF layouts (tests/reference/hf.py);
malformed files are refused by name. With torch + transformers (the GPU machine), the
logits of transformers' own models are compared too."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringloom.checkpoint import load_safetensors, save_safetensors
from ringloom.models import ModelConfig, build_model
from ringloom.models.hf import config_from_hf, export_hf, hf_config, import_hf
from reference.hf import gpt2_logits, llama_logits
from tolerances import assert_close

# Odd sizes on purpose: V, T, F not multiples of anything; GQA with 2 query heads per kv head.
CONFIGS = {
    "gpt2": ModelConfig(arch="gpt2", vocab_size=67, n_layer=2, n_head=3, n_embd=24, ffn_hidden=52, max_seq_len=19),
    "gpt2-untied": ModelConfig(arch="gpt2", vocab_size=61, n_layer=1, n_head=2, n_embd=16, max_seq_len=11,
                               tie_embeddings=False),
    "llama": ModelConfig(arch="llama", vocab_size=71, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, ffn_hidden=44,
                         max_seq_len=23, rope_base=500.0, tie_embeddings=False, bias=False),
    "llama-tied-bias": ModelConfig(arch="llama", vocab_size=53, n_layer=1, n_head=2, n_kv_head=1, n_embd=16,
                                   ffn_hidden=20, max_seq_len=9, tie_embeddings=True, bias=True, norm_eps=1e-6),
}

GPT2_LAYER = {"ln_1.weight": ("C",), "ln_1.bias": ("C",), "attn.c_attn.weight": ("C", "3C"),
              "attn.c_attn.bias": ("3C",), "attn.c_proj.weight": ("C", "C"), "attn.c_proj.bias": ("C",),
              "ln_2.weight": ("C",), "ln_2.bias": ("C",), "mlp.c_fc.weight": ("C", "F"), "mlp.c_fc.bias": ("F",),
              "mlp.c_proj.weight": ("F", "C"), "mlp.c_proj.bias": ("C",)}
LLAMA_LAYER = {"input_layernorm.weight": ("C",), "post_attention_layernorm.weight": ("C",),
               "self_attn.q_proj.weight": ("HD", "C"), "self_attn.k_proj.weight": ("KD", "C"),
               "self_attn.v_proj.weight": ("KD", "C"), "self_attn.o_proj.weight": ("C", "HD"),
               "mlp.gate_proj.weight": ("F", "C"), "mlp.up_proj.weight": ("F", "C"),
               "mlp.down_proj.weight": ("C", "F")}


def expected_hf_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes transformers expects, written out from its module layout."""
    dims = {"C": c.n_embd, "3C": 3 * c.n_embd, "F": c.ffn_hidden, "HD": c.n_head * c.head_dim,
            "KD": c.n_kv_head * c.head_dim, "V": c.vocab_size, "P": c.max_seq_len}
    out = {}
    if c.arch == "gpt2":
        out["transformer.wte.weight"] = ("V", "C")
        out["transformer.wpe.weight"] = ("P", "C")
        for i in range(c.n_layer):
            out.update({f"transformer.h.{i}.{k}": v for k, v in GPT2_LAYER.items()})
        out["transformer.ln_f.weight"] = out["transformer.ln_f.bias"] = ("C",)
    else:
        out["model.embed_tokens.weight"] = ("V", "C")
        for i in range(c.n_layer):
            for k, v in LLAMA_LAYER.items():
                out[f"model.layers.{i}.{k}"] = v
                if c.bias and k.endswith("proj.weight"):
                    out[f"model.layers.{i}.{k[:-6]}bias"] = v[:1]
        out["model.norm.weight"] = ("C",)
    if not c.tie_embeddings:
        out["lm_head.weight"] = ("V", "C")
    return {k: tuple(dims[d] for d in v) for k, v in out.items()}


def random_model(config: ModelConfig, rng):
    """A model whose every parameter (norm gains and biases included) is random, so a
    misplaced tensor cannot hide behind ones and zeros."""
    model = build_model(config, seed=0)
    model.load_state_dict({k: rng.standard_normal(v.shape).astype(np.float32) * 0.3 + (k.endswith("norm.weight")
                                                                                        or ".ln" in k)
                           for k, v in model.state_dict().items()})
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_export_layout_and_round_trip(name, tmp_path, rng):
    config = CONFIGS[name]
    model = random_model(config, rng)
    path = export_hf(model, str(tmp_path))
    hf, meta = load_safetensors(path)
    assert meta == {"format": "pt"}
    assert {k: v.shape for k, v in hf.items()} == expected_hf_shapes(config)
    cfg = json.load(open(tmp_path / "config.json"))
    assert cfg["model_type"] == config.arch and cfg["tie_word_embeddings"] == config.tie_embeddings
    # Round trip: config and every tensor, bit for bit.
    back = import_hf(str(tmp_path))
    assert back.config == config
    a, b = model.state_dict(), back.state_dict()
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ids = rng.integers(0, config.vocab_size, (2, config.max_seq_len - 2))
    assert np.array_equal(np.asarray(model.logits(ids)), np.asarray(back.logits(ids)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_exported_file_means_the_same_model(name, tmp_path, rng):
    config = CONFIGS[name]
    model = random_model(config, rng)
    export_hf(model, str(tmp_path))
    hf, _ = load_safetensors(str(tmp_path / "model.safetensors"))
    cfg = json.load(open(tmp_path / "config.json"))
    ids = rng.integers(0, config.vocab_size, (2, config.max_seq_len - 1))
    want = (gpt2_logits if config.arch == "gpt2" else llama_logits)(hf, cfg, ids)
    assert_close(np.asarray(model.logits(ids)), want, "float32", what="logits")


def test_openai_gpt2_naming_is_accepted(tmp_path, rng):
    """OpenAI's gpt2 files: no 'transformer.' prefix, causal-mask buffers, lm_head absent."""
    config = CONFIGS["gpt2"]
    model = random_model(config, rng)
    export_hf(model, str(tmp_path / "a"))
    hf, _ = load_safetensors(str(tmp_path / "a" / "model.safetensors"))
    bare = {k[len("transformer."):]: v for k, v in hf.items()}
    for i in range(config.n_layer):
        bare[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 19, 19), np.float32))
    save_safetensors(str(tmp_path / "bare.safetensors"), bare)
    back = import_hf(str(tmp_path / "bare.safetensors"), config=hf_config(config))
    for k, v in model.state_dict().items():
        assert np.array_equal(v, back.state_dict()[k]), k


def test_bf16_export(tmp_path, rng):
    import ml_dtypes

    model = random_model(CONFIGS["llama"], rng)
    export_hf(model, str(tmp_path), dtype=ml_dtypes.bfloat16)
    hf, _ = load_safetensors(str(tmp_path / "model.safetensors"))
    assert all(v.dtype == ml_dtypes.bfloat16 for v in hf.values())
    assert json.load(open(tmp_path / "config.json"))["torch_dtype"] == "bfloat16"
    back = import_hf(str(tmp_path))
    for k, v in model.state_dict().items():
        assert_close(back.state_dict()[k], v, "bfloat16", what=k)


def _edited(tmp_path, rng, edit):
    config = CONFIGS["llama"]
    export_hf(random_model(config, rng), str(tmp_path))
    hf, _ = load_safetensors(str(tmp_path / "model.safetensors"))
    edit(hf)
    save_safetensors(str(tmp_path / "model.safetensors"), hf)
    return str(tmp_path)


def test_bad_files_are_refused(tmp_path, rng):
    d = _edited(tmp_path / "a", rng, lambda hf: hf.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match="'model.layers.1.mlp.up_proj.weight' is missing"):
        import_hf(d)
    d = _edited(tmp_path / "b", rng, lambda hf: hf.update(extra=np.zeros(2, np.float32)))
    with pytest.raises(ValueError, match=r"unexpected tensors \['extra'\]"):
        import_hf(d)

    def shrink(hf):
        hf["model.layers.0.self_attn.o_proj.weight"] = hf["model.layers.0.self_attn.o_proj.weight"][:, :-1]
    d = _edited(tmp_path / "c", rng, shrink)
    with pytest.raises(ValueError, match=r"blocks\.0\.attn\.proj\.weight: expected \(32, 32\), got \(32, 31\)"):
        import_hf(d)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        import_hf(str(tmp_path / "c" / "model.safetensors").replace("/c/", "/nowhere/"))


@pytest.mark.parametrize("patch,needle", [
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"hidden_act": "gelu"}, "activation 'gelu'"),
    ({"head_dim": 4}, "head_dim 4"),
    ({"model_type": "mistral"}, "model_type 'mistral'"),
])
def test_unsupported_configs(patch, needle):
    cfg = {**hf_config(CONFIGS["llama"]), **patch}
    with pytest.raises(ValueError, match=needle):
        config_from_hf(cfg)


def _sharded(tmp_path, rng, shard_name: str) -> str:
    """An exported llama split into two shards, the second listed in the index as shard_name."""
    config = CONFIGS["llama"]
    d = tmp_path / "hf"
    export_hf(random_model(config, rng), str(d))
    hf, _ = load_safetensors(str(d / "model.safetensors"))
    os.unlink(d / "model.safetensors")
    names = sorted(hf)
    first, second = names[: len(names) // 2], names[len(names) // 2:]
    save_safetensors(str(d / "model-00001-of-00002.safetensors"), {k: hf[k] for k in first})
    save_safetensors(str(tmp_path / "elsewhere.safetensors"), {k: hf[k] for k in second})
    weight_map = {**{k: "model-00001-of-00002.safetensors" for k in first}, **{k: shard_name for k in second}}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return str(d)


def test_sharded_index_loads(tmp_path, rng):
    d = _sharded(tmp_path, rng, "model-00002-of-00002.safetensors")
    os.replace(tmp_path / "elsewhere.safetensors", os.path.join(d, "model-00002-of-00002.safetensors"))
    assert import_hf(d).config == CONFIGS["llama"]


@pytest.mark.parametrize("shard", ["../elsewhere.safetensors", "ABSOLUTE", "link.safetensors"])
def test_shard_names_outside_the_directory_are_refused(tmp_path, rng, shard):
    elsewhere = str(tmp_path / "elsewhere.safetensors")
    d = _sharded(tmp_path, rng, elsewhere if shard == "ABSOLUTE" else shard)
    if shard == "link.safetensors":
        os.symlink(elsewhere, os.path.join(d, shard))
        match = "symbolic link"
    else:
        match = "model.safetensors.index.json: file name .*(leaves its directory|not a relative path)"
    with pytest.raises(ValueError, match=match):
        import_hf(d)


@pytest.mark.parametrize("index,needle", [
    ("[]", "not a JSON object"),
    ('{"weight_map": ["a"]}', "no 'weight_map' object"),
    ('{"weight_map": {"w": 3}}', "is not a non-empty string"),
    ("{", "not valid JSON"),
])
def test_malformed_index_is_refused(tmp_path, rng, index, needle):
    d = _sharded(tmp_path, rng, "x.safetensors")
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        f.write(index)
    with pytest.raises(ValueError, match=needle):
        import_hf(d)


@pytest.mark.parametrize("arch,drop", [("gpt2", "n_embd"), ("gpt2", "vocab_size"), ("llama", "hidden_size"),
                                       ("llama", "intermediate_size"), ("llama", "num_hidden_layers")])
def test_config_missing_keys_is_a_value_error(arch, drop):
    cfg = hf_config(CONFIGS[arch])
    del cfg[drop]
    with pytest.raises(ValueError, match=f"import_hf: the {arch} config has no '{drop}'"):
        config_from_hf(cfg)


def test_config_files_that_are_not_objects(tmp_path, rng):
    export_hf(random_model(CONFIGS["gpt2"], rng), str(tmp_path))
    for text, needle in (("[1, 2]", "not a JSON object"), ("{nope", "not valid JSON")):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ValueError, match=f"config.json: {needle}"):
            import_hf(str(tmp_path))
    with pytest.raises(ValueError, match="not a JSON object"):
        config_from_hf([1, 2])


def test_export_does_not_replace_files_unasked(tmp_path, rng):
    model = random_model(CONFIGS["gpt2"], rng)
    export_hf(model, str(tmp_path))
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds model.safetensors, config.json"):
        export_hf(random_model(CONFIGS["gpt2"], rng), str(tmp_path))
    assert (tmp_path / "model.safetensors").read_bytes() == before
    export_hf(model, str(tmp_path), overwrite=True)


_hf_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 64), st.floats(), st.text(max_size=4),
                       st.lists(st.integers(), max_size=2))


@settings(max_examples=200, deadline=None)
@given(arch=st.sampled_from(["gpt2", "llama"]), data=st.data())
def test_random_configs_build_or_raise_value_error(arch, data):
    """config_from_hf on a config with fields dropped or replaced by random values returns a
    ModelConfig or raises ValueError; never KeyError, TypeError or anything else."""
    cfg = hf_config(CONFIGS[arch])
    for key in data.draw(st.lists(st.sampled_from(sorted(cfg)), max_size=4)):
        if data.draw(st.booleans()):
            cfg.pop(key, None)
        else:
            cfg[key] = data.draw(_hf_values)
    try:
        config_from_hf(cfg)
    except ValueError:
        pass


def test_transformers_logits_match(tmp_path, rng):
    torch = pytest.importorskip("torch", reason="torch is not installed (the GPU machine has it)")
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    for name in ("gpt2", "llama"):
        config = CONFIGS[name]
        model = random_model(config, rng)
        export_hf(model, str(tmp_path / name))
        theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / name), torch_dtype=torch.float32)
        theirs.eval()
        ids = rng.integers(0, config.vocab_size, (2, config.max_seq_len - 1))
        with torch.no_grad():
            want = theirs(torch.from_numpy(ids)).logits.double().numpy()
        assert_close(np.asarray(model.logits(ids)), want, "float32", what="logits")
        # And back: transformers' own save is importable.
        theirs.save_pretrained(str(tmp_path / f"{name}-saved"), safe_serialization=True)
        back = import_hf(str(tmp_path / f"{name}-saved"))
        for k, v in model.state_dict().items():
            assert np.array_equal(v, back.state_dict()[k]), k
