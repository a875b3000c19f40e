"""``"package.module:Name"`` -> the object it names: how every plug-in registry loads a class.

One helper for every plug-in kind (transports, listeners, outputs, and the analyzer's
rules and notifiers next), after uvicorn's ``importer.import_from_string``.
"""

from __future__ import annotations

import importlib
from typing import Any

from numbat.errors import NumbatError


class ImportFromStringError(NumbatError, ValueError):
    """``path`` is not ``"module:attribute"`` or cannot be imported; the message says which.

    >>> str(ImportFromStringError("no.such:Thing", "No module named 'no'"))
    "cannot import 'no.such:Thing': No module named 'no'"
    """

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"cannot import {path!r}: {why}")


def import_from_string(path: str) -> Any:
    """The object ``path`` (``"package.module:Attr"``, dots allowed in ``Attr``) names.

    Raises :class:`ImportFromStringError` when ``path`` has no ``:``, the module cannot be
    imported, or it has no such attribute. An error raised *inside* the module while it
    is imported propagates unchanged: it is a bug in that module, not a wrong path.

    >>> import_from_string("collections:OrderedDict").__name__
    'OrderedDict'
    >>> import_from_string("collections")
    Traceback (most recent call last):
    ...
    numbat._importer.ImportFromStringError: cannot import 'collections': expected "module:Attribute"
    """
    module_name, sep, attrs = path.partition(":")
    if not sep or not module_name or not attrs:
        raise ImportFromStringError(path, 'expected "module:Attribute"')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module *named in the path* is the path's fault.
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        raise ImportFromStringError(path, f"no module named {exc.name!r}") from None
    found: Any = module
    for attr in attrs.split("."):
        try:
            found = getattr(found, attr)
        except AttributeError:
            raise ImportFromStringError(path, f"{module_name} has no attribute {attrs!r}") from None
    return found
