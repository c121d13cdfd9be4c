"""Errors that say what is wrong and what to do about it."""
from __future__ import annotations


class SpurlabError(ValueError):
    """Base class for every error spurlab raises on bad input.

    The message states the problem; ``hint`` (appended to the message) says how
    to fix it. Subclassing ``ValueError`` keeps ``except ValueError`` working.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  hint: {hint}")


class UnknownNameError(SpurlabError, KeyError):
    """A name (dataset, study, method, ...) that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown {kind} {name!r}",
            hint=f"known {kind}s: {', '.join(self.known)}",
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class DataNotFoundError(SpurlabError, FileNotFoundError):
    """Files a loader needs are not on disk."""
