"""The training run's configuration: one dataclass, filled from the CLI or from Python.

Each field is written once, with its default and its command-line help (``_opt``); the
``ringloom train`` arguments are generated from these fields (train/cli_args.py). The rules
about values and combinations live in train/options.py, run when a TrainConfig is made.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The argument groups of `ringloom train --help`, in order.
MODEL = "model and optimisation"
DATA = "data"
OUTPUT = "evaluation, logging, output"
SAMPLES = "samples"
PARALLEL = "parallelism (one process per rank; start with ringloom launch)"
GROUPS = (MODEL, DATA, OUTPUT, SAMPLES, PARALLEL)


def _opt(default: Any, help: str, group: str, **cli: Any) -> Any:
    """A field with its CLI metadata. ``cli``: metavar, choices, low / high / low_open
    (numeric bounds the CLI checks), kind ("device", "tokenizer", "int_list"), nargs, const."""
    meta = {"help": help, "group": group, **cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # ---- model and optimisation
    preset: str = _opt("tiny", "model preset, e.g. tiny, llama-tiny, gpt2-124m, llama-1b; the model-shape "
                       "options below override its fields", MODEL)
    steps: int = _opt(1000, "optimizer steps", MODEL, low=1)
    batch_size: int = _opt(16, "global batch size in sequences, over all data-parallel ranks", MODEL, low=1,
                           metavar="B")
    seq_len: int = _opt(128, "tokens per sequence", MODEL, low=1, metavar="T")
    lr: float = _opt(3e-3, "peak learning rate", MODEL, low=0.0, low_open=True)
    min_lr: float | None = _opt(None, "learning rate at the end of the decay (default: lr / 10)", MODEL, low=0.0)
    warmup: int = _opt(50, "linear warm-up steps", MODEL, low=0, metavar="STEPS")
    lr_schedule: str = _opt("cosine", "learning-rate decay after the warm-up", MODEL,
                            choices=("cosine", "linear", "constant"))
    weight_decay: float = _opt(0.1, "AdamW decoupled weight decay", MODEL, low=0.0)
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this, 0 = off", MODEL, low=0.0)
    seed: int = _opt(1337, "initialisation and data order", MODEL, low=0, high=2**63 - 1)
    device: str = _opt("cpu", "cpu, cuda or cuda:N", MODEL, kind="device")
    dtype: str = _opt("auto", "compute dtype; auto = float32 on CPU, bfloat16 on GPU", MODEL,
                      choices=("auto", "float32", "bfloat16"))
    cuda_graph: bool = _opt(False, "capture the training step in a CUDA Graph after 2 eager steps and replay it "
                            "(single GPU; for small models where kernel launch gaps dominate)", MODEL)
    attention: str = _opt("auto", "GPU attention: our kernels, cuDNN's fused SDPA, or auto = per shape "
                          "and direction the one measured fastest", MODEL, choices=("ours", "cudnn", "auto"))
    deterministic_attention: bool = _opt(False, "bitwise reproducible attention backward on the GPU (slower: dq in "
                                         "a separate pass instead of atomics; not with --attention cudnn)", MODEL)
    threads: int = _opt(0, "CPU threads of the ops (OpenMP and OpenBLAS); 0 = all cores when the machine is "
                        "idle, else 1", MODEL, low=0, high=1024, metavar="N")
    # ModelConfig fields replacing the preset's (the CLI's model-shape group: --n-layer ...).
    model_overrides: dict[str, Any] = field(default_factory=dict)

    # ---- data
    data: list[str] = _opt([], "text files or directories (recursive); default: the built-in corpus (the "
                           "Python standard library's .py sources)", DATA, nargs="+", metavar="PATH")
    corpus_bytes: int = _opt(8_000_000, "size cap of the built-in corpus in bytes", DATA, low=1, metavar="N")
    tokenizer: str = _opt("byte", "byte | bpe:PATH/tokenizer.json | bpe-train:VOCAB (train BPE on the data)",
                          DATA, kind="tokenizer", metavar="SPEC")
    val_fraction: float = _opt(0.1, "share of the documents held out for val loss", DATA, low=0.0, low_open=True,
                               high=0.5, metavar="F")

    # ---- evaluation, logging, output
    eval_every: int = _opt(100, "val loss every N steps and at the end, 0 = only at the end", OUTPUT, low=0,
                           metavar="STEPS")
    eval_batches: int = _opt(8, "val batches per evaluation", OUTPUT, low=1, metavar="N")
    log_every: int = _opt(10, "metrics.jsonl line every N steps", OUTPUT, low=1, metavar="STEPS")
    out: str | None = _opt(None, "output directory (default: runs/<preset>)", OUTPUT, metavar="DIR")
    save_every: int = _opt(0, "checkpoint every N steps, 0 = only at the end", OUTPUT, low=0, metavar="STEPS")
    async_save: bool = _opt(False, "write checkpoints on a background thread from a host snapshot while training "
                            "goes on (at most one save in flight; checkpoint/async_save.py)", OUTPUT)
    resume: str | None = _opt(None, "resume from a checkpoint (default when given without a value: the latest "
                              "in --out)", OUTPUT, nargs="?", const="latest", metavar="CKPT")
    overwrite: bool = _opt(False, "replace the run already in --out: its metrics, model, checkpoints, event "
                           "files and plots are deleted first (other files are kept); without --resume or "
                           "--overwrite an existing run is refused (train/run_dir.py)", OUTPUT)
    keep_checkpoints: int = _opt(3, "keep the newest K complete checkpoints, 0 = all", OUTPUT, low=0, metavar="K")
    on_nonfinite: str = _opt("stop", "when a step's loss or gradients are NaN/inf: stop with an error, or skip "
                             "the update (train/nonfinite.py)", OUTPUT, choices=("stop", "skip"))
    peak_tflops: float | None = _opt(None, "peak FLOP/s for MFU (default: 989, an H100's dense BF16, on GPU; no "
                                     "MFU on CPU)", OUTPUT, low=0.0, low_open=True, metavar="TFLOPS")
    tensorboard: bool = _opt(True, "TensorBoard event files in --out/tb", OUTPUT)
    progress: bool = _opt(True, "progress bar", OUTPUT)

    # ---- samples
    sample_every: int = _opt(0, "print a sample every N steps, 0 = only at the end", SAMPLES, low=0,
                             metavar="STEPS")
    prompt: str = _opt("", "prompt for the samples (default: empty)", SAMPLES)
    sample_len: int = _opt(200, "tokens to generate", SAMPLES, low=0, metavar="N")
    temperature: float = _opt(0.8, "softmax temperature", SAMPLES, low=0.0, low_open=True)
    top_k: int = _opt(40, "sample from the K most likely tokens, 0 = all", SAMPLES, low=0, metavar="K")

    # ---- parallel layout; 1 x 1 is single-process training
    dp: int | None = _opt(None, "data-parallel ranks (default: world size / pp)", PARALLEL, low=1)
    pp: int = _opt(1, "pipeline stages", PARALLEL, low=1)
    tp: int = _opt(1, "tensor-parallel ranks per stage (Megatron-style layers with sequence parallelism; "
                   "dp x pp x tp = world size)", PARALLEL, low=1)
    schedule: str = _opt("1f1b", "pipeline schedule; zb = zb-h1, the zero-bubble schedule", PARALLEL,
                         choices=("gpipe", "1f1b", "interleaved", "zb-h1", "zb"))
    micro_batches: int | None = _opt(None, "micro-batches per step and rank (default: pp)", PARALLEL, low=1,
                                     metavar="M")
    chunks: int | None = _opt(None, "virtual stages per rank for --schedule interleaved (default: 2)", PARALLEL,
                              low=1, metavar="V")
    stage_layers: list[int] | None = _opt(None, "layers per (virtual) stage, e.g. 3,2,2 (default: balanced by "
                                          "parameter count)", PARALLEL, kind="int_list", metavar="N,N,...")
    zero: int = _opt(0, "ZeRO over the data-parallel ranks: 1 shards the optimizer state, 2 also the gradients, "
                     "3 also the parameters (gathered per layer as it runs); --zero alone = 1 (parallel/zero.py)",
                     PARALLEL, choices=(0, 1, 2, 3), nargs="?", const=1, metavar="STAGE")
    bucket_mb: float = _opt(25.0, "gradient all-reduce bucket size", PARALLEL, low=0.0, low_open=True,
                            metavar="MB")
    compression: str = _opt("none", "compress the data-parallel gradient reduction: none, bf16, topk:RATIO "
                            "(error feedback), powersgd:RANK or qsgd:LEVELS[:BUCKET] (stochastic quantisation "
                            "to LEVELS levels per 512-element bucket, unbiased) (parallel/compression.py)",
                            PARALLEL, metavar="SPEC")
    local_sgd: int = _opt(0, "local SGD: replicas step alone and average their weights every H steps, 0 = off",
                          PARALLEL, low=0, metavar="H")
    local_sgd_moments: bool = _opt(False, "with --local-sgd, average AdamW's moments too", PARALLEL)
    param_servers: int = _opt(0, "parameter-server training: the last S ranks hold the parameters (sharded) "
                              "and their AdamW state; the other ranks are workers that push gradients and pull "
                              "parameters. Needs S + 1 ranks or more. 0 = off", PARALLEL, low=0, metavar="S")
    ps_mode: str = _opt("sync", "with --param-servers: sync (every step sums all workers' gradients: the same "
                        "run as all-reduce data parallel) or async (servers update every W gradients as they "
                        "arrive; workers may run ahead, see --ps-staleness)", PARALLEL, choices=("sync", "async"))
    ps_staleness: int = _opt(0, "with --ps-mode async: how many steps a worker may run ahead of the slowest "
                             "(0 = lockstep, equal to sync)", PARALLEL, low=0, metavar="STEPS")
    trace: str | None = _opt(None, "write a Chrome trace JSON of every rank's compute and communication",
                             PARALLEL, metavar="PATH")
    backend: str = _opt("auto", "collective backend. auto: on GPUs nccl when every rank of a host has a GPU of "
                        "its own, else ours (CUDA IPC, ranks sharing a GPU under CUDA MPS; else through host "
                        "memory); on CPU ours", PARALLEL, choices=("auto", "nccl", "ring", "tree"))

    def __post_init__(self) -> None:
        if self.min_lr is None and isinstance(self.lr, (int, float)):
            self.min_lr = self.lr / 10
        if self.schedule == "zb":
            self.schedule = "zb-h1"
        self.model_overrides = dict(self.model_overrides or {})
        if isinstance(self.zero, bool):
            self.zero = int(self.zero)   # True: ZeRO-1, as the boolean flag meant
        from .options import validate

        validate(self)   # every rule on option values and combinations (train/options.py)

    @classmethod
    def from_args(cls, args: Any) -> "TrainConfig":
        """From an argparse namespace of train/cli_args.py (or any object with some of the
        field names as attributes): the values present (not None) replace the defaults;
        ``no_<field>`` switches a default-on field off; ``model.<name>`` attributes are
        model overrides."""
        kw: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        for k, v in vars(args).items():
            if v is None:
                continue
            if k.startswith("model."):
                overrides[k[len("model."):]] = v
            elif k.startswith("no_") and k[3:] in _FIELDS and v is True:
                kw[k[3:]] = False
            elif k in _FIELDS:
                kw[k] = v
        if overrides:
            kw["model_overrides"] = {**kw.get("model_overrides", {}), **overrides}
        return cls(**kw)


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
