"""Typed payloads: a dataclass or a pydantic (v2) model in ``emit()``, and back with
``Event.payload_as(Model)``. No import of pydantic: a model is recognised by its methods.

Dataclasses: ``emit()`` stores ``dataclasses.asdict(payload)`` (its datetime, Decimal or UUID
values need ``json_default``, as in a dict). ``payload_as`` builds the dataclass from the JSON
object, recursively for fields typed as dataclasses, ``list[...]``, ``dict[str, ...]`` and
``X | None``; datetime, date, Decimal and UUID fields are parsed from the text ``json_default``
writes. Keys the dataclass does not have are ignored (a newer producer may add fields); a missing
field without a default is an error.

pydantic: ``emit()`` stores ``model.model_dump(mode="json")``; ``payload_as`` calls
``Model.model_validate_json(payload)``, so the model's own rules (extra keys, coercion) apply.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar, Union

__all__ = ["PayloadError", "from_payload", "to_json_value"]

T = TypeVar("T")


class PayloadError(ValueError):
    """The payload does not fit the model asked for (a bad event: dead-lettered after max_attempts)."""


def _is_pydantic_model(value: object) -> bool:
    cls = value if isinstance(value, type) else type(value)
    return callable(getattr(cls, "model_validate_json", None)) and callable(getattr(cls, "model_dump", None))


def to_json_value(payload: object) -> object:
    """A dataclass instance or pydantic model as JSON-ready values; anything else as is."""
    if isinstance(payload, type):
        raise TypeError(f"emit: payload is the class {payload.__name__}, not an instance of it")
    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        return dataclasses.asdict(payload)
    if _is_pydantic_model(payload):
        return payload.model_dump(mode="json")  # type: ignore[attr-defined]
    return payload


def from_payload(model: type[T], payload: bytes) -> T:
    """``payload`` (JSON text) as an instance of ``model`` (a dataclass or a pydantic model)."""
    if _is_pydantic_model(model):
        try:
            return typing.cast(T, model.model_validate_json(payload))  # type: ignore[attr-defined]
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise PayloadError(f"payload does not fit {model.__name__}: {e}") from e
    if not (isinstance(model, type) and dataclasses.is_dataclass(model)):
        raise TypeError(f"payload_as: {model!r} is neither a dataclass nor a pydantic model")
    try:
        data = json.loads(payload)
    except ValueError as e:
        raise PayloadError(f"payload is not JSON: {e}") from e
    return typing.cast(T, _convert(model, data, model.__name__))


def _convert(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is Any or kind is object:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except PayloadError as e:
                errors.append(str(e))
        raise PayloadError("; ".join(errors) or f"{where}: no option of {kind} fits {value!r}")
    if origin in (list, tuple, set, frozenset, typing.Sequence) or kind in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise PayloadError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(kind)
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        container = origin if origin in (tuple, set, frozenset) else (kind if kind in (tuple, set, frozenset) else list)
        return container(items)
    if origin in (dict, typing.Mapping) or kind is dict:
        if not isinstance(value, dict):
            raise PayloadError(f"{where}: expected an object, got {type(value).__name__}")
        args = typing.get_args(kind)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise PayloadError(f"{where}: expected an object for {kind.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        values = {}
        for f in dataclasses.fields(kind):
            if not f.init:
                continue
            if f.name in value:
                values[f.name] = _convert(hints.get(f.name, Any), value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PayloadError(f"{where}: missing field {f.name!r}")
        return kind(**values)
    return _scalar(kind, value, where)


def _scalar(kind: Any, value: Any, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif kind is str:
            if isinstance(value, str):
                return value
        elif kind is Decimal:
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                return Decimal(value)
        elif kind is uuid.UUID:
            if isinstance(value, str):
                return uuid.UUID(value)
        elif kind is datetime:
            if isinstance(value, str):
                return datetime.fromisoformat(value)
        elif kind is date:
            if isinstance(value, str):
                return date.fromisoformat(value)
        elif kind is time:
            if isinstance(value, str):
                return time.fromisoformat(value)
        elif isinstance(kind, type) and isinstance(value, kind):
            return value
        else:
            return kind(value) if isinstance(kind, type) else value
    except (ValueError, ArithmeticError) as e:
        raise PayloadError(f"{where}: {value!r} is not a valid {getattr(kind, '__name__', kind)}: {e}") from e
    raise PayloadError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__} {value!r}")
