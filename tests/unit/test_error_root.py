"""Every error the service defines descends from one root, so a caller can catch them all."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import streams
from streams.errors import TrustServiceError


def test_every_exception_class_under_streams_descends_from_the_root() -> None:
    defined = []
    for module_info in pkgutil.walk_packages(streams.__path__, "streams."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                defined.append(cls)
    assert len(defined) >= 10  # the scan found them
    outside = [
        f"{c.__module__}.{c.__qualname__}" for c in defined if not issubclass(c, TrustServiceError)
    ]
    assert outside == []
