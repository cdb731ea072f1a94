"""Loading local checkpoints (a transformers checkpoint directory or a `.gguf` file) and choosing
device and dtype.

`load_checkpoint(path)` returns a `LoadedModel` (model + tokenizer + where it runs). Device "auto" is
cuda when available (dtype bfloat16) else cpu (dtype float32). On the CPU every nn.Linear runs on weights
prepacked once for oneDNN (`prepack_linears`): float32 results are the same and a decode step is faster.
With dtype bfloat16 on a CPU with native bf16 (AVX512-BF16 or AMX) only the Linear weights are bf16 (the rest,
and the logits, stay float32), which is faster still (BENCHMARKS.md, "CPU generation settings"); without
native bf16 a bfloat16 model is cast as a whole, as before. Loads are shared: loading the same
path/device/dtype twice while the first is still alive returns the same object (a weak cache), so a
generator and a discriminator on one checkpoint hold one copy; dropping every reference frees it.
Every failure to find or load a checkpoint raises `CheckpointError` with the path in the message.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import CheckpointError

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def choose_device(device: str | None = "auto") -> str:
    """"auto"/None -> "cuda" when torch sees a GPU, else "cpu"; anything else is returned as given."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but torch sees no CUDA device")
    return str(device)


def choose_dtype(device: str, dtype: str | None = "auto"):
    """"auto"/None -> bfloat16 on cuda, float32 on cpu; else the named dtype (float32|bfloat16|float16)."""
    import torch

    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = _DTYPES.get(str(dtype).lower())
    if key is None:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return getattr(torch, key)


@dataclass(eq=False)
class LoadedModel:
    """A model and its tokenizer, ready to run. `name` is the checkpoint name recorded on scores."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    load_seconds: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # one generation at a time
    origin: LoadedModel | None = field(default=None, repr=False)  # the shared load this one renames

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        eos = self.eos_token_ids()
        return eos[0] if eos else 0

    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids: the generation config's (may be several) plus the tokenizer's."""
        ids: list[int] = []
        gc_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for v in (gc_eos if isinstance(gc_eos, list) else [gc_eos]) + [self.tokenizer.eos_token_id]:
            if v is not None and int(v) not in ids:
                ids.append(int(v))
        return ids

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


_SHARED: weakref.WeakValueDictionary[tuple, LoadedModel] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def validate_checkpoint_path(path: str | Path) -> Path:
    """Cheap checks before loading: the path exists and looks like a checkpoint directory
    (config.json) or a GGUF file (magic bytes). Raises CheckpointError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint path does not exist: {p}")
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise CheckpointError(f"not a transformers checkpoint directory (no config.json): {p}")
    else:
        try:
            with p.open("rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint file {p}: {e}") from e
        if magic != b"GGUF":
            raise CheckpointError(f"not a GGUF file (a checkpoint file must be .gguf): {p}")
    return p


def load_checkpoint(path: str | Path, *, name: str | None = None, device: str | None = "auto",
                    dtype: str | None = "auto", share: bool = True, prepack: bool = True) -> LoadedModel:
    """Load a causal LM and its tokenizer from a checkpoint directory or a `.gguf` file. On the CPU its
    Linear layers are prepacked for oneDNN unless `prepack=False` (see the module docstring).

    Raises CheckpointError when the path does not exist or the load fails."""
    p = validate_checkpoint_path(path).resolve()
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    key = (str(p), dev, str(dt), prepack)
    with _SHARED_LOCK:
        if share:
            hit = _SHARED.get(key)
            if hit is not None:
                if name and hit.name != name:  # same weights, another configured name: share the model
                    return LoadedModel(name=name, path=hit.path, model=hit.model, tokenizer=hit.tokenizer,
                                       device=hit.device, dtype=hit.dtype, load_seconds=0.0, lock=hit.lock, origin=hit)
                return hit
        lm = _load(p, name or (p.stem if p.is_file() else p.name), dev, dt, prepack)
        if share:
            _SHARED[key] = lm
        return lm


def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX) and torch has oneDNN to use them.
    (oneDNN also "supports" bf16 on plain AVX512 by emulation, which is not faster than float32.)"""
    import torch

    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(native and torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):  # a torch build without these probes or without oneDNN
        return False


def _cpu_pack_dtype(device: str, dtype: Any) -> Any:
    """The dtype `prepack_linears` packs a CPU model's Linear weights in (None: leave the model as loaded)."""
    import torch

    if device != "cpu":
        return None
    if dtype == torch.bfloat16:
        return torch.bfloat16 if cpu_bf16_native() else None
    return torch.float32 if dtype == torch.float32 else None


@functools.cache
def _packed_linear_class():
    import torch

    class PackedLinear(torch.nn.Module):
        """An nn.Linear run by oneDNN on weights reordered once into its blocked layout, in `dtype` (the
        `mkldnn._linear_pointwise` kernel torch's own CPU compiler emits for a Linear); float32 in and out."""

        def __init__(self, lin: torch.nn.Linear, dtype):
            super().__init__()
            self.in_features, self.out_features, self.dtype = lin.in_features, lin.out_features, dtype
            w = lin.weight.detach().to(dtype)
            self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(w), persistent=False)
            b = lin.bias
            self.register_buffer("bias", None if b is None else b.detach().to(dtype), persistent=False)

        def forward(self, x):
            y = torch.ops.mkldnn._linear_pointwise(x if x.dtype == self.dtype else x.to(self.dtype), self.weight,
                                                   self.bias, "none", [], "")
            return y if y.dtype == x.dtype else y.to(x.dtype)

    return PackedLinear


def prepack_linears(model: Any, dtype: Any) -> int:
    """Replace every nn.Linear in `model` by oneDNN's prepacked linear with weights in `dtype` (float32 or
    bfloat16); inputs and outputs keep the model's float32. Returns how many were replaced (0 when torch
    has no oneDNN). A tied output head gets its own packed copy; the input embedding keeps its weights."""
    import torch

    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return 0
    cls = _packed_linear_class()
    n = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, child_name, cls(child, dtype))
                n += 1
    return n


def _load(p: Path, name: str, device: str, dtype, prepack: bool = True) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    pack = _cpu_pack_dtype(device, dtype) if prepack else None
    try:
        if p.is_file():
            kw: dict[str, Any] = {"gguf_file": p.name}
            src = str(p.parent)
        else:
            kw = {}
            src = str(p)
        tok = AutoTokenizer.from_pretrained(src, **kw)
        # packed Linear weights: load float32, so embeddings and norms stay float32 (bf16 is only the Linears')
        model = AutoModelForCausalLM.from_pretrained(src, dtype="float32" if pack else dtype, **kw)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError/... for broken checkpoints
        raise CheckpointError(f"checkpoint {p} failed to load: {type(e).__name__}: {e}") from e
    model.to(device)
    model.eval()
    if pack is not None:
        prepack_linears(model, pack)
    return LoadedModel(name=name, path=p, model=model, tokenizer=tok, device=device, dtype=dtype,
                       load_seconds=time.perf_counter() - t0)


def release_memory() -> None:
    """Collect garbage and return cached CUDA blocks (after dropping the last reference to a model)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
