"""The user's Python function as a trial: ``trial.fn=my_pkg.my_module:train`` or ``path/to/file.py:train``.

The function takes one argument, the `Trial` handle, and returns a mapping metric -> number holding every
objective. It runs in the worker's own process, so it shares the worker's device and memory.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import LayersearchError
from ..importing import load_attr
from .handle import Trial

__all__ = ["FunctionError", "PythonTraining", "function_spec", "resolve_function"]


class FunctionError(LayersearchError, ValueError):
    """``trial.fn`` does not name a function that takes the trial handle; one line."""


def resolve_function(spec: Any) -> Callable[[Trial], Mapping[str, Any]]:
    """The callable named by ``spec`` (``module:function``, ``file.py:function``, or a callable itself).

    Raises:
        FunctionError: it does not import, is not callable, or cannot take exactly one argument.
    """
    if callable(spec):
        fn, where = spec, getattr(spec, "__qualname__", repr(spec))
    else:
        text = str(spec or "")
        fn, where = load_attr(text, "trial.fn", FunctionError), text
        if not callable(fn):
            raise FunctionError(f"trial.fn={text!r} is not callable (it is a {type(fn).__name__})")
    try:
        inspect.signature(fn).bind(object())
    except TypeError:
        raise FunctionError(f"trial.fn {where} must take one argument, the trial handle "
                            f"(def train(trial): ...); its signature is {inspect.signature(fn)}") from None
    except ValueError:
        pass  # no signature to read (a builtin): let the call say
    return fn


def function_spec(fn: Callable[..., Any]) -> str:
    """A string that names ``fn`` in another process (``module:qualname`` or ``file.py:qualname``).

    Raises:
        FunctionError: ``fn`` is a lambda or a nested function, which another process cannot import.
    """
    qualname = getattr(fn, "__qualname__", "")
    module = getattr(fn, "__module__", None)
    if not qualname or "<" in qualname or module is None:
        raise FunctionError(f"{fn!r} cannot be named in a worker process: define it at the top of a module")
    if module == "__main__" or module.startswith("layersearch_user_"):
        path = getattr(sys.modules.get(module), "__file__", None)
        if not path:
            raise FunctionError(f"{qualname} lives in an interactive session; workers cannot import it: put it in a file")
        return f"{Path(path).resolve()}:{qualname}"
    return f"{module}:{qualname}"


class PythonTraining:
    """``training(trial) -> metrics``: calls the user's function with the handle."""

    kind = "python"
    user_code = True  # an exception in the user's function fails its trial; the sweep goes on

    def __init__(self, spec: Any):
        self.spec = spec
        self._fn: Callable[[Trial], Mapping[str, Any]] | None = None

    @property
    def label(self) -> str:
        """What the study records as its training (``module:function``)."""
        if isinstance(self.spec, str) or self.spec is None:
            return str(self.spec)
        return f"{getattr(self.spec, '__module__', '?')}:{getattr(self.spec, '__qualname__', repr(self.spec))}"

    def prepare(self) -> None:
        self.check()

    def check(self) -> None:
        """Import the function and check that it takes the trial handle."""
        if self.spec is None:
            raise FunctionError("trial=python needs trial.fn=module:function (or path/to/file.py:function)")
        self._fn = resolve_function(self.spec)

    def __call__(self, trial: Trial) -> Any:
        if self._fn is None:
            self.check()
        return self._fn(trial)
