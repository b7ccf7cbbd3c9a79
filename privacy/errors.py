"""Errors raised by the privacy layer: a stable ``code`` and one English sentence.

Messages never contain a prompt, a user name, an uploaded file's name or picture data, so they
are safe to show to the person and to write to a log.
"""

from __future__ import annotations


class PrivacyError(ValueError):
    """Base of every privacy-layer refusal; ``str(err)`` is the sentence, ``err.code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class ScrubError(PrivacyError):
    """An uploaded image that cannot be accepted (too big, wrong format, damaged)."""


class SealError(PrivacyError):
    """Sealed data that cannot be opened: wrong key, wrong context, damaged or truncated."""


class SpoolError(PrivacyError):
    """A spooled upload that is gone, belongs to someone else, or cannot be read."""


class GalleryError(PrivacyError):
    """A gallery picture that is gone, belongs to someone else, or cannot be opened."""
