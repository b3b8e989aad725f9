"""The Chroma index: passages, their sentences and the full document texts, read back into memory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.documents import Chunk, Sentence, SourceDocument

log = logging.getLogger(__name__)

COMPLETE_MARKER = "INDEX_COMPLETE"  # written last by ingest; an index without it is not used
INDEX_FORMAT = 3  # 3: knowledge entries' question keys (the *_keys collection) and document review dates.
# raise when what ingest stores changes; an index of another format is rebuilt


def open_client(path: Path):
    """A persistent Chroma client with telemetry off (there is no network here)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))


def _collections(client, name: str):
    # We always pass our own vectors: no embedding function, so Chroma never tries to fetch its default model.
    space = {"hnsw:space": "cosine"}
    return (
        client.get_or_create_collection(f"{name}_chunks", metadata=space, embedding_function=None),
        client.get_or_create_collection(f"{name}_sentences", metadata=space, embedding_function=None),
        client.get_or_create_collection(f"{name}_documents", embedding_function=None),
        client.get_or_create_collection(f"{name}_keys", metadata=space, embedding_function=None),
    )


def read_marker(path: Path) -> dict | None:
    """What the last complete ingest recorded, or None when there is no complete index."""
    try:
        return json.loads((path / COMPLETE_MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return None


def is_complete(path: Path) -> bool:
    """A complete index of the current format is there."""
    marker = read_marker(path)
    return marker is not None and marker.get("format") == INDEX_FORMAT


@dataclass
class IndexedDocument:
    doc_id: str
    title: str
    source: str
    url: str | None
    path: str
    text: str
    content_hash: str
    sources: list[dict[str, str]]
    reviewed: str | None = None


class Index:
    """Everything retrieval and composing need, loaded from one Chroma folder."""

    def __init__(self, path: Path, collection: str = "knowledge") -> None:
        if not is_complete(path):
            raise FileNotFoundError(f"no complete index at {path}; run: python -m bot ingest")
        self.path = path
        self._closed = False
        self.client = open_client(path)
        self.chunks_col, self.sentences_col, self.docs_col, self.keys_col = _collections(self.client, collection)
        self._load()

    def _load(self) -> None:
        docs = self.docs_col.get(include=["documents", "metadatas"])
        self.documents: dict[str, IndexedDocument] = {}
        for doc_id, text, meta in zip(docs["ids"], docs["documents"], docs["metadatas"], strict=True):
            self.documents[doc_id] = IndexedDocument(
                doc_id=doc_id, title=meta["title"], source=meta["source"], url=meta.get("url") or None,
                path=meta.get("path", ""), text=text, content_hash=meta["content_hash"],
                sources=json.loads(meta.get("sources", "[]")), reviewed=meta.get("reviewed") or None,
            )
        got = self.chunks_col.get(include=["documents", "metadatas", "embeddings"])
        self.chunks: dict[str, Chunk] = {}
        order: list[str] = []
        for cid, meta in zip(got["ids"], got["metadatas"], strict=True):
            self.chunks[cid] = Chunk(
                chunk_id=cid, doc_id=meta["doc_id"], title=meta["title"], section=meta.get("section", ""),
                text=meta["text"], start=int(meta["start"]), end=int(meta["end"]),
                source=meta["source"], url=meta.get("url") or None, keys=tuple(json.loads(meta.get("keys", "[]"))),
            )
            order.append(cid)
        self.chunk_ids = order
        self.chunk_vectors = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(order), -1)
        sg = self.sentences_col.get(include=["documents", "metadatas", "embeddings"])
        self.sentences: list[Sentence] = [
            Sentence(sentence_id=sid, chunk_id=meta["chunk_id"], position=int(meta["position"]), text=text,
                     grade=float(meta.get("grade", 0.0)))
            for sid, text, meta in zip(sg["ids"], sg["documents"], sg["metadatas"], strict=True)
        ]
        self.sentence_vectors = np.asarray(sg["embeddings"], dtype=np.float32).reshape(len(self.sentences), -1)
        self.sentences_by_chunk: dict[str, list[int]] = {}
        for i, sent in enumerate(self.sentences):
            self.sentences_by_chunk.setdefault(sent.chunk_id, []).append(i)
        for rows in self.sentences_by_chunk.values():
            rows.sort(key=lambda i: self.sentences[i].position)
        kg = self.keys_col.get(include=["documents", "metadatas", "embeddings"])
        # An entry's question and its "also asked as" phrasings: (chunk id, text), searched, never quoted.
        self.keys: list[tuple[str, str]] = [(meta["chunk_id"], text)
                                            for text, meta in zip(kg["documents"], kg["metadatas"], strict=True)]
        self.key_vectors = np.asarray(kg["embeddings"], dtype=np.float32).reshape(len(self.keys), -1)

    def close(self) -> None:
        """Release the Chroma client so the folder can be replaced by a new index (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self.client.close()

    def doc_ids(self) -> list[str]:
        return sorted(self.documents)

    def document_text(self, doc_id: str) -> str:
        """The full text of a document as indexed; every quote is a span of it."""
        return self.documents[doc_id].text

    def dense_search(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Chunk ids and cosine similarities, best first, from Chroma's vector index."""
        k = min(k, len(self.chunk_ids))
        if k == 0:
            return []
        res = self.chunks_col.query(query_embeddings=[query_vector.tolist()], n_results=k, include=["distances"])
        return [(cid, 1.0 - float(d)) for cid, d in zip(res["ids"][0], res["distances"][0], strict=True)]


    def dense_keys(self, query_vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Entry chunk ids and the cosine similarity of their best-matching question key, best first."""
        n = min(k * 4, len(self.keys))
        if n == 0:
            return []
        res = self.keys_col.query(query_embeddings=[query_vector.tolist()], n_results=n, include=["metadatas", "distances"])
        best: dict[str, float] = {}
        for meta, d in zip(res["metadatas"][0], res["distances"][0], strict=True):
            cid = meta["chunk_id"]
            best[cid] = max(best.get(cid, -1.0), 1.0 - float(d))
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]


def write_index(
    path: Path,
    collection: str,
    documents: list[SourceDocument],
    chunks: list[Chunk],
    chunk_vectors: np.ndarray,
    sentences: list[Sentence],
    sentence_vectors: np.ndarray,
    keys: list[tuple[str, str]] | None = None,
    key_vectors: np.ndarray | None = None,
) -> None:
    """Write a whole index into an empty folder, marking it complete only at the end.

    `keys` are (chunk id, question text) pairs of knowledge entries, with their vectors in `key_vectors`.
    """
    client = open_client(path)
    chunks_col, sentences_col, docs_col, keys_col = _collections(client, collection)
    batch = 2000
    if documents:
        docs_col.add(
            ids=[d.doc_id for d in documents],
            embeddings=[[1.0] for _ in documents],  # whole documents are looked up by id, never searched
            documents=[d.text for d in documents],
            metadatas=[{
                "title": d.title, "source": d.source, "url": d.url or "", "path": d.path,
                "content_hash": d.content_hash, "sources": json.dumps(list(d.sources)), "reviewed": d.reviewed or "",
            } for d in documents],
        )
    for i in range(0, len(chunks), batch):
        part = chunks[i:i + batch]
        chunks_col.add(
            ids=[c.chunk_id for c in part],
            embeddings=chunk_vectors[i:i + batch].tolist(),
            documents=[c.search_text for c in part],
            metadatas=[{
                "doc_id": c.doc_id, "title": c.title, "section": c.section, "text": c.text,
                "start": c.start, "end": c.end, "source": c.source, "url": c.url or "", "keys": json.dumps(list(c.keys)),
            } for c in part],
        )
    for i in range(0, len(sentences), batch):
        part_s = sentences[i:i + batch]
        sentences_col.add(
            ids=[s.sentence_id for s in part_s],
            embeddings=sentence_vectors[i:i + batch].tolist(),
            documents=[s.text for s in part_s],
            metadatas=[{"chunk_id": s.chunk_id, "position": s.position, "grade": s.grade} for s in part_s],
        )
    keys = keys or []
    for i in range(0, len(keys), batch):
        part_k = keys[i:i + batch]
        keys_col.add(
            ids=[f"{cid}:k{i + j}" for j, (cid, _) in enumerate(part_k)],
            embeddings=key_vectors[i:i + batch].tolist(),
            documents=[text for _, text in part_k],
            metadatas=[{"chunk_id": cid} for cid, _ in part_k],
        )
    client.close()
    marker = {"format": INDEX_FORMAT, "documents": len(documents), "chunks": len(chunks),
              "paths": sorted({d.path for d in documents})}
    (path / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1))
