"""The one base of every error that means "your input is wrong".

The CLI prints a ``LayersearchError`` as one line and exits with status 2. Anything else that escapes a
command is a bug: the CLI prints its traceback and exits with status 1. Each subclass keeps the built-in
type it had before (ValueError, RuntimeError, OSError) as a second base, so library callers that catch
those still do.
"""

from __future__ import annotations


class LayersearchError(Exception):
    """Bad input from the user: a config value, a file, a study name, a port. The message is one line."""


class ConfigValueError(LayersearchError, ValueError):
    """A config value of the wrong type or out of range; the message names its key (``trainer.lr``)."""


class OutputError(LayersearchError, OSError):
    """An output that cannot be written where asked (an existing folder, a read-only place)."""


class RandomWeightsWarning(UserWarning):
    """Results computed with a randomly initialised network mean little; they are labelled as such.

    Here rather than in ``lossnet.weights`` so that the CLI can filter it without importing torch.
    """


class OutputExistsError(OutputError, FileExistsError):
    """The output folder asked for already holds files; nothing is overwritten."""
