"""What the engine raises when it cannot do what a face asked.

Each class names a situation, never a status code or a JSON shape: a face maps
them to its own answers (v2: problem documents; Jobe: outcomes and strings).
`detail` is a sentence for a person, naming the field or limit concerned.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: `detail` says what went wrong, for the caller's user."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(EngineError):
    """The request is malformed or impossible as asked (the detail names the field)."""


class KernelNotFound(EngineError):
    """No such kernel for this owner; `detail` is why it went, when it is known."""


class LanguageMismatch(EngineError):
    """A session token names a live kernel of another language."""


class UnknownLanguage(EngineError):
    """No language of that name or alias."""


class QuotaExceeded(EngineError):
    """The owner has reached one of its own limits (kernels, folders, folder bytes)."""


class NoCapacity(EngineError):
    """The host cannot take it now: max_kernels, a missing runtime, a full disk."""


class ServiceUnavailable(EngineError):
    """The engine cannot start kernels at all until the server is restarted."""


class KernelStartFailed(EngineError):
    """A kernel (or its restart, with `restart` set) did not start."""

    def __init__(self, detail: str = "", restart: bool = False) -> None:
        super().__init__(detail)
        self.restart = restart


class ExecutionFailed(EngineError):
    """A live kernel did not do what it was asked (it did not answer, or died)."""


class DestructionFailed(EngineError):
    """A process of the kernel would not die."""


class FolderNotFound(EngineError):
    """No folder of that name or id for this owner."""


class FolderExists(EngineError):
    """The owner has a folder of that name already."""
