"""Matching on the event loop without blocking it: the encoder runs in a worker thread, and
messages that arrive while it runs are encoded together in its next call.

The encoder streams about 13 MB of weights per call whatever the batch size, so a batch of
sixteen short messages costs little more than one; numpy releases the GIL while it multiplies,
so the event loop keeps serving the messages the n-gram model is sure about meanwhile.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from bot.matching.matcher import Match, Matcher, Pending

MAX_TEXTS = 64
"""Texts per encoder call: beyond this a batch mostly adds waiting time."""


class BatchedMatcher:
    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self._waiting: list[tuple[tuple[str, ...], asyncio.Future[npt.NDArray[np.float32]]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")

    async def match(self, message: str) -> Match:
        pending = self.matcher.start(message)
        if not pending.texts:
            return self.matcher.finish(pending, _NO_VECTORS)
        recalled = self.matcher.encoder.recalled(pending.texts)  # no thread hop for those
        if recalled is not None:
            return self.matcher.finish(pending, recalled)
        return self.matcher.finish(pending, await self._vectors(pending))

    async def _vectors(self, pending: Pending) -> npt.NDArray[np.float32]:
        future: asyncio.Future[npt.NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        self._waiting.append((pending.texts, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._encode_waiting())
        return await future

    async def _encode_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, count = [], 0
            while self._waiting and (not batch or count + len(self._waiting[0][0]) <= MAX_TEXTS):
                texts, future = self._waiting.pop(0)
                batch.append((texts, future))
                count += len(texts)
            flat = [t for texts, _ in batch for t in texts]
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self.matcher.encoder.encode, flat
                )
            except Exception as error:  # the waiting messages fail with it, not the loop
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            start = 0
            for texts, future in batch:
                if not future.done():
                    future.set_result(vectors[start : start + len(texts)])
                start += len(texts)


_NO_VECTORS: npt.NDArray[np.float32] = np.zeros((0, 512), np.float32)
