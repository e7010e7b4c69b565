"""The bot's exception hierarchy: one base class, one error per failure the user can act on."""


class InfoGuardError(Exception):
    """Base class of every error the bot raises on purpose."""


class ContentError(InfoGuardError):
    """The knowledge base or case files are broken; holds every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class ConfigError(InfoGuardError):
    """A setting is missing or malformed."""
