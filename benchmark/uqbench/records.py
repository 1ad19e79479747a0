"""Typed values to and from JSON records, driven by their type hints: frozen dataclasses (nested), lists,
tuples, ``dict[str, X]``, optionals, literals, enums, paths and plain numbers.

``config.json`` and ``summary.json`` are written with :func:`to_json` and read back with :func:`from_json`,
so a file read back is the value that was written, and a damaged or foreign file is refused with the path
of the first field that does not fit, never half-read. A class with ``record()`` and
``from_record(record, where)`` (e.g. ``FailureRule``, which adds and checks its hash) writes and reads itself.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from uqbench.files import write_atomic


def to_json(value: Any) -> Any:
    """The JSON-able form of ``value`` (dataclasses as dicts of their fields, in field order)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "record", None)
        return own() if callable(own) else fields_to_json(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically: a reader never sees half a file (a crash leaves the old one)."""
    text = json.dumps(obj, indent=1, default=str)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def fields_to_json(value: Any) -> dict[str, Any]:
    """A dataclass's fields as a JSON-able dict (what a class's own ``record()`` builds on)."""
    return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}


def from_json(tp: Any, data: Any, where: str = "value") -> Any:
    """``data`` (parsed JSON) as a value of type ``tp``; ValueError naming the path ``where`` of the first
    field that does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"{where}: only X | None unions can be read, not {tp}")
        return from_json(options[0], data, where)
    if origin is typing.Literal:
        if data not in args:
            raise ValueError(f"{where}: {data!r} is not one of {', '.join(map(repr, args))}")
        return data
    if origin is list:
        return [from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(_expect(data, list, where))]
    if origin is tuple:
        items = _expect(data, list, where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(items))
        if len(items) != len(args):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(items)}")
        return tuple(from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, items, strict=True)))
    if origin is dict:
        return {k: from_json(args[1], v, f"{where}.{k}") for k, v in _expect(data, dict, where).items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        own = getattr(tp, "from_record", None)
        return own(_expect(data, dict, where), where) if callable(own) else fields_from_json(tp, data, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise ValueError(f"{where}: {data!r} is not one of {', '.join(repr(m.value) for m in tp)}") from None
    if tp is Path:
        return Path(_expect(data, str, where))
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ValueError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise ValueError(f"{where}: expected an integer, got {data!r}")
        return data
    if tp in (str, bool):
        return _expect(data, tp, where)
    raise TypeError(f"{where}: cannot read values of type {tp}")


def fields_from_json(cls: type, data: Any, where: str = "value") -> Any:
    """A dataclass ``cls`` from the dict ``data``: every field without a default must be there, and no
    other key may be."""
    data = _expect(data, dict, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = sorted(set(data) - set(fields))
    if extra:
        raise ValueError(f"{where}: unexpected field(s) {', '.join(extra)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    return cls(**{n: from_json(hints[n], v, f"{where}.{n}") for n, v in data.items()})


def fields_from_hashed(cls: type, record: Any, where: str, *, version: tuple[str, int], kind: str,
                       label: typing.Callable[[Any], str]) -> Any:
    """A hashed record (a ``hash`` of its fields and a ``version`` key) read back as ``cls``; ValueError naming
    ``where`` when it was written under another version or its fields no longer hash to its ``hash`` (edited by
    hand). ``kind`` and ``label`` name the value in that message."""
    key, current = version
    found = record.get(key)
    if found != current:
        raise ValueError(f"{where}: {key.replace('_', ' ')} {found!r}; this uqbench has {current}")
    value = fields_from_json(cls, {k: v for k, v in record.items() if k not in ("hash", key)}, where)
    if record.get("hash") != value.digest():
        raise ValueError(f"{where}: {kind} {label(value)!r} has hash {record.get('hash')!r}, but its parameters "
                         f"hash to {value.digest()} (edited by hand?)")
    return value


def _expect(data: Any, tp: type, where: str) -> Any:
    if not isinstance(data, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {type(data).__name__}")
    return data
