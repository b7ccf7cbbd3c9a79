"""Errors a person can fix, with one sentence that names the problem and the fix.

Every user mistake raises :class:`InputError` (or a subclass) carrying a stable ``code`` and the
numbers needed to explain it, so the web UI can translate the sentence. Messages never contain a
prompt, a user name or an uploaded file's name.
"""

from __future__ import annotations

from typing import Any


class InputError(ValueError):
    """A request or model that cannot be used as given; ``str(err)`` is the English sentence."""

    def __init__(self, code: str, message: str, **params: Any) -> None:
        self.code = code
        self.params = params
        self.message = message.format(**params) if params else message
        super().__init__(self.message)


class ModelError(InputError):
    """A model file or folder that cannot be loaded (missing, corrupt, unsafe, unknown)."""


class JobCancelled(Exception):
    """Raised inside a running pipeline when its job was cancelled."""


class ServerStopping(InputError):
    """The server is stopping: a job still waiting or running is ended with this."""

    def __init__(self) -> None:
        super().__init__(
            "shutting_down", "The server is stopping; try again in a moment, when it is back."
        )
