"""`infoguard serve`: runs the one aiohttp application (WeChat webhook, case pages, Telegram
webhook) on INFOGUARD_HOST:INFOGUARD_PORT until SIGINT or SIGTERM, then shuts down
gracefully: stops accepting, lets answers in progress finish, closes storage. With
`--workers N`, N such processes share the port under a supervisor (bot.workers)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys

from bot.config import Settings
from bot.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the server: WeChat webhook, case pages, Telegram webhook",
        description="Serve on INFOGUARD_HOST:INFOGUARD_PORT until interrupted. WeChat is "
        "enabled by WECHAT_TOKEN (webhook at /wechat), Telegram by TELEGRAM_TOKEN.",
    )
    p.add_argument("--host", help="address to listen on (env INFOGUARD_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (env INFOGUARD_PORT)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on the port (SO_REUSEPORT); more than one wants "
        "INFOGUARD_DATABASE_URL=postgresql://… and INFOGUARD_REDIS_URL",
    )
    # Set by the supervisor for each worker it starts.
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.workers > 1 and args.worker is None:
        if settings.telegram_token and settings.telegram_mode != "webhook":
            # Telegram answers a second concurrent getUpdates with 409 Conflict.
            raise ConfigError("several workers need TELEGRAM_MODE=webhook: only one may poll")
        return _supervise(args.workers, settings, host, port)
    # Imported here: the web stack and both channels load only for the command that needs them.
    from bot.server import serve

    asyncio.run(serve(settings, host, port, worker=args.worker, ready_fd=args.ready_fd))
    return 0


def _supervise(workers: int, settings: Settings, host: str, port: int) -> int:
    from bot.workers import Supervisor

    # The workers read the same settings from the environment, command-line choices included.
    env = {
        **os.environ,
        "INFOGUARD_KNOWLEDGE_DIR": str(settings.knowledge_dir),
        "INFOGUARD_CASES_DIR": str(settings.cases_dir),
        "INFOGUARD_DATABASE": str(settings.database),
        "INFOGUARD_DATABASE_URL": settings.database_url,
    }
    command = [sys.executable, "-m", "bot"]
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        command.append("--debug")
    # One process trains the matcher after a knowledge edit; the workers then load it. Each
    # training its own at once would take them longer than the supervisor waits for them.
    if subprocess.run([*command, "kb", "train"], env=env, check=False).returncode != 0:
        raise ConfigError("the matcher could not be trained: see the lines above")
    command += ["serve", "--host", host, "--port", str(port)]
    supervisor = Supervisor(command, workers, env, f"http://{host}:{port}")
    return asyncio.run(supervisor.run())
