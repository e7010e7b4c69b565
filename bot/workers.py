"""`infoguard serve --workers N`: N server processes on one port, and a supervisor over them.

Each worker is a full `infoguard serve` process that opens the port with SO_REUSEPORT, so the
kernel spreads incoming connections over them; what they must agree on (seen message ids, the
access token, sessions, the push schedule) lives in the shared storage, which is why more than
one worker wants PostgreSQL and Redis (SQLite works on one machine too). The supervisor starts
them, reports ready once every worker listens, restarts a worker that dies, and on SIGTERM or
SIGINT stops them all gracefully (each finishes the requests it has).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence

from bot.errors import ConfigError

READY_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
RESTART_DELAY_SECONDS = 1.0
MAX_QUICK_DEATHS = 5
"""A worker that dies this many times in a row within a minute of starting is not restarted
again: something is wrong with the setup, and the supervisor exits."""


class Supervisor:
    def __init__(
        self, command: Sequence[str], workers: int, env: Mapping[str, str], where: str
    ) -> None:
        self.command = list(command)
        """The worker's command line, to which `--worker N --ready-fd FD` is appended."""
        self.count = workers
        self.env = dict(env)
        self.where = where
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        try:
            await asyncio.gather(*(self._start(n) for n in range(1, self.count + 1)))
            print(
                f"infoguard: serving on {self.where} with {self.count} workers",
                file=sys.stderr,
                flush=True,
            )
            watchers = [asyncio.create_task(self._watch(n)) for n in self.procs]
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stop, *watchers], return_when=asyncio.FIRST_COMPLETED)
            failed = stop not in done
            print("infoguard: stopping", file=sys.stderr, flush=True)
            self._stopping.set()
            for task in watchers:
                task.cancel()
            return 1 if failed else 0
        finally:
            await self._stop_all()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _start(self, number: int) -> None:
        """Start worker `number` and wait until it listens; ConfigError if it dies first."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                "--worker",
                str(number),
                "--ready-fd",
                str(write_fd),
                env=self.env,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self.procs[number] = proc
        reader = asyncio.create_task(asyncio.to_thread(_read_line, read_fd))
        exited = asyncio.create_task(proc.wait())
        try:
            done, _ = await asyncio.wait(
                [reader, exited], timeout=READY_TIMEOUT_SECONDS, return_when="FIRST_COMPLETED"
            )
        finally:
            exited.cancel()
        if reader in done and reader.result():
            return
        raise ConfigError(f"worker {number} did not start (its messages are above)")

    async def _watch(self, number: int) -> None:
        """Restart worker `number` whenever it dies; returns when it keeps dying at once."""
        quick_deaths = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await self.procs[number].wait()
            if self._stopping.is_set():
                return
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < 60 else 1
            print(
                f"infoguard: worker {number} exited ({code}); restarting",
                file=sys.stderr,
                flush=True,
            )
            if quick_deaths >= MAX_QUICK_DEATHS:
                print(f"infoguard: worker {number} keeps dying", file=sys.stderr, flush=True)
                return
            await asyncio.sleep(RESTART_DELAY_SECONDS)
            try:
                await self._start(number)
            except ConfigError:
                continue

    async def _stop_all(self) -> None:
        running = [p for p in self.procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(p.wait() for p in running)), STOP_TIMEOUT_SECONDS
            )
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


def _read_line(fd: int) -> bytes:
    """One line from a pipe (empty when the writer closed it without writing)."""
    with os.fdopen(fd, "rb") as pipe:
        return pipe.readline()
