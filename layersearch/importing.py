"""Loading a name the user wrote as ``my_pkg.module:attr`` or ``path/to/file.py:attr`` (a trial function,
a loss network's builder), with one-line errors. Imports no room."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import LayersearchError


def load_file(path: Path, error: type[LayersearchError], key: str):
    """A Python file as a module, once per process (under a name derived from its resolved path)."""
    name = "layersearch_user_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise error(f"{key}: cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_attr(text: str, key: str, error: type[LayersearchError], what: str = "function") -> Any:
    """The object ``text`` names: ``module:attr`` (dotted attr allowed) or ``path/to/file.py:attr``.

    Args:
        text: what the user wrote.
        key: the config key it came from, for messages (``trial.fn``, ``loss_net.module``).
        error: the LayersearchError subclass to raise.
        what: what ``attr`` should be, for messages.

    Raises:
        error: malformed, missing file, the module fails to import, or it has no such attribute.
    """
    module_part, sep, attr = text.rpartition(":")
    if not sep or not module_part or not attr:
        raise error(f"{key}={text!r}: expected module:{what} or path/to/file.py:{what}")
    try:
        if module_part.endswith(".py"):
            path = Path(module_part).expanduser()
            if not path.is_file():
                raise error(f"{key}={text!r}: no such file {path}")
            module = load_file(path, error, key)
        else:
            module = importlib.import_module(module_part)
    except LayersearchError:
        raise
    except Exception as err:  # the user's module failed while importing: say what and where, in one line
        raise error(f"{key}={text!r} does not import: {type(err).__name__}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"{key}={text!r}: {module_part} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
