"""Old spellings kept as deprecated aliases: renamed keywords and properties (one definition of each).

Private. An alias warns with ``DeprecationWarning`` naming the new spelling, then does what the new
spelling does; it is removed only in a later major version.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Decorator: ``old=...`` keywords (``renamed_keywords(show_progress="progress")``) are taken as the
    new ones, with a ``DeprecationWarning``; both at once -> ``TypeError``. The signature that
    ``inspect`` shows stays the new one."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got both {old}= (deprecated) and {new}=; pass {new}= only")
                    warnings.warn(f"{fn.__qualname__}({old}=...) is deprecated; use {new}=...",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return wrap


def deprecated_property(old: str, new: str, get: Callable[[Any], Any]) -> property:
    """A read-only property ``old`` returning ``get(self)`` with a ``DeprecationWarning`` that names
    ``new`` (e.g. ``n_docs`` -> ``len(retriever)``)."""

    def fget(self: Any) -> Any:
        warnings.warn(f"{type(self).__name__}.{old} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        return get(self)

    return property(fget, doc=f"Deprecated alias: use ``{new}``.")
