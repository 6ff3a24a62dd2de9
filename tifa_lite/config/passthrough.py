"""The escape hatches (``grpo.trl_args``, ``dpo.trl_args``, a reward's ``kwargs``) typed by
what they are handed to: the fields of a TRL config dataclass, or the parameters of a
reward function.

The recipe schema cannot type them (their names depend on the installed TRL, or on a
user's function), and YAML types loosely: PyYAML reads ``2e-1`` as a string, which would
fail deep inside TRL's loss. So each value is validated against the annotation of the
field or parameter it goes to (pydantic's lax mode: ``"2e-1"`` → 0.2, ``"true"`` → True),
and a name the target does not have is refused with the closest one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from tifa_lite.errors import ConfigError

# Annotations such as ``ParallelismConfig | None`` name classes pydantic has no schema for:
# those values are checked by isinstance; numbers given for a ``str`` field become strings.
_LAX = ConfigDict(arbitrary_types_allowed=True, coerce_numbers_to_str=True)


def dataclass_fields(cls: type) -> dict[str, Any]:
    """``{field name: annotation}`` of the fields a dataclass's ``__init__`` takes."""
    hints = _hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def keyword_parameters(func: Callable, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """``{parameter name: annotation}`` of what ``func`` takes by keyword. ``**kwargs`` is not
    counted: a setting must be a named parameter to be checked (and found by its name)."""
    hints = _hints(_annotated(func))
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(func).parameters.values()
    return {p.name: hints.get(p.name, Any) for p in params if p.kind in kinds and p.name not in set(exclude)}


def coerce(values: Mapping[str, Any], accepted: Mapping[str, Any], key: str, target: str) -> dict[str, Any]:
    """``values`` validated against ``accepted`` (``{name: annotation}``). ``key`` is the recipe
    key they come from (``grpo.trl_args``), ``target`` what takes them (``trl.GRPOConfig``)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in accepted:
            close = difflib.get_close_matches(name, list(accepted), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listing = f" It takes: {', '.join(sorted(accepted))}." if len(accepted) <= 12 else ""
            raise ConfigError(f"{key}.{name}: {target} has no setting {name!r}{hint}.{listing}")
        out[name] = _validate(accepted[name], value, f"{key}.{name}", target)
    return out


def _validate(annotation: Any, value: Any, dotted: str, target: str) -> Any:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    try:
        adapter = TypeAdapter(annotation, config=_LAX)
    except Exception:  # an annotation pydantic cannot build a schema for: pass the value as is
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", str(exc))
        raise ConfigError(f"{dotted}={value!r}: {target} expects {_type_name(annotation)} ({reason}).") from None


def _annotated(func: Callable) -> Any:
    """Where the annotations of what ``func(...)`` takes are written."""
    while isinstance(func, functools.partial):
        func = func.func
    func = inspect.unwrap(func)
    if isinstance(func, type):
        return func.__init__
    if not (inspect.isfunction(func) or inspect.ismethod(func)) and callable(func):
        return type(func).__call__
    return func


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation naming something not importable here: leave those untyped
        return {}
