"""The error of the transcription package (the lowest module of :mod:`slotmpe.transcribe`: it
imports nothing from it, so every other module may import it)."""

from __future__ import annotations


class TranscriptionError(RuntimeError):
    """A problem with a model file or an output; the message names the file and the problem."""
