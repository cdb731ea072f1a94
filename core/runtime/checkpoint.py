"""Loading local checkpoints (a transformers checkpoint directory or a `.gguf` file) and choosing
device and dtype.

`load_checkpoint(path)` returns a `LoadedModel` (model + tokenizer + where it runs). Device "auto" is
cuda when available (dtype bfloat16) else cpu (dtype float32). Loads are shared: loading the same
path/device/dtype twice while the first is still alive returns the same object (a weak cache), so a
generator and a discriminator on one checkpoint hold one copy; dropping every reference frees it.
Every failure to find or load a checkpoint raises `CheckpointError` with the path in the message.
"""

from __future__ import annotations

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
                    dtype: str | None = "auto", share: bool = True) -> LoadedModel:
    """Load a causal LM and its tokenizer from a checkpoint directory or a `.gguf` file.

    Raises CheckpointError when the path does not exist or the load fails."""
    p = validate_checkpoint_path(path).resolve()
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    key = (str(p), dev, str(dt))
    with _SHARED_LOCK:
        if share:
            hit = _SHARED.get(key)
            if hit is not None:
                if name and hit.name != name:  # same weights, another configured name: share the model
                    return LoadedModel(name=name, path=hit.path, model=hit.model, tokenizer=hit.tokenizer,
                                       device=hit.device, dtype=hit.dtype, load_seconds=0.0, lock=hit.lock, origin=hit)
                return hit
        lm = _load(p, name or (p.stem if p.is_file() else p.name), dev, dt)
        if share:
            _SHARED[key] = lm
        return lm


def _load(p: Path, name: str, device: str, dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    try:
        if p.is_file():
            kw: dict[str, Any] = {"gguf_file": p.name}
            src = str(p.parent)
        else:
            kw = {}
            src = str(p)
        tok = AutoTokenizer.from_pretrained(src, **kw)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **kw)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError/... for broken checkpoints
        raise CheckpointError(f"checkpoint {p} failed to load: {type(e).__name__}: {e}") from e
    model.to(device)
    model.eval()
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
