"""Canonical msgpack encoding and the partition digest (docs/protocol.md, "Partition data, deltas and
digests").

Two parties that hold equal partition data must compute equal digests, whatever order their maps were
built in and whatever language they are written in.  The canonical encoding fixes the one freedom that
msgpack leaves open that matters here, the order of map entries, and pins the choices a packer could make
differently:

- maps: entries sorted by the canonical encoding of their keys, compared bytewise (so ``"b"`` sorts
  before ``"aa"``: the fixstr header carries the length), recursively at every level;
- integers: the smallest msgpack form that holds the value (positive fixint, uint8..uint64 for
  non-negative values; negative fixint, int8..int64 for negative ones), as the msgpack spec and
  msgpack-python both do;
- ``str``: the str family, UTF-8; ``bytes``/``bytearray``: the bin family;
- ``float``: always float64 (never float32), the IEEE 754 bit pattern as-is (``-0.0`` and ``0.0`` differ);
- ``list``/``tuple``: arrays, in order; ``None``, ``True``, ``False``: nil, true, false.

Anything else (ext types, timestamps, sets, integers outside [-2**63, 2**64), arbitrary objects) raises
``TypeError``: a value that cannot be encoded canonically cannot be compared by digest.

Implementation: one recursive pass validates every node and rebuilds maps in canonical order; the C
packer then writes the result in one call (it packs dicts in insertion order and already emits the
smallest integer forms).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import msgpack
import xxhash

__all__ = ["canonical_packb", "canonicalize", "digest"]

# Exact types handled without further thought; subclasses (IntEnum, StrEnum, ...) take the slow path.
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})

# Recursion bound for nested containers: remote data must cost bounded work (STYLE.md "Errors").
MAX_DEPTH = 64


_local = threading.local()


def _packb(obj: Any) -> bytes:
    # One Packer per thread (a Packer is not safe to share across threads): building one per call,
    # as msgpack.packb does, costs three times the packing of a short key.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, use_single_float=False, autoreset=True)
    try:
        return packer.pack(obj)  # type: ignore[no-any-return]
    except BaseException:
        _local.packer = None  # do not trust a packer that failed half-way
        raise


def _key_bytes(key: Any, depth: int) -> bytes:
    if type(key) in _SCALARS:
        return _pack_checked(key)
    if isinstance(key, str | int | float | bytes | bytearray) or key is None:
        return _pack_checked(_scalar(key))
    if isinstance(key, tuple) and not isinstance(key, msgpack.ExtType):
        return _pack_checked(canonicalize(key, depth + 1))
    raise TypeError(f"unsupported map key type for canonical msgpack: {type(key).__name__}")


def _pack_checked(obj: Any) -> bytes:
    try:
        return _packb(obj)
    except OverflowError as exc:  # integer outside msgpack's 64-bit range
        raise TypeError(f"integer out of msgpack range: {exc}") from None


def _scalar(obj: Any) -> Any:
    """Map a scalar subclass instance to its base type (what a foreign decoder would see)."""
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, bytes | bytearray):
        return bytes(obj)
    return obj


def canonicalize(obj: Any, depth: int = 0) -> Any:
    """Return a plain structure equal to ``obj`` whose dicts are in canonical key order.

    Raises ``TypeError`` for anything the canonical encoding does not cover.
    """
    t = type(obj)
    if t in _SCALARS:
        return obj
    if depth >= MAX_DEPTH:
        raise TypeError(f"nesting deeper than {MAX_DEPTH} levels")
    if t is dict or isinstance(obj, Mapping):
        entries = [(_key_bytes(k, depth), k, v) for k, v in obj.items()]
        entries.sort(key=_first)
        out: dict[Any, Any] = {}
        previous = None
        for kb, k, v in entries:
            if kb == previous:
                raise TypeError(f"two map keys with the same canonical encoding: {k!r}")
            previous = kb
            out[_canonical_key(k)] = canonicalize(v, depth + 1)
        return out
    if t is list or t is tuple or (isinstance(obj, list | tuple) and not isinstance(obj, msgpack.ExtType)):
        return [canonicalize(item, depth + 1) for item in obj]
    if isinstance(obj, str | int | float | bytes | bytearray):
        return _scalar(obj)
    raise TypeError(f"unsupported type for canonical msgpack: {t.__name__}")


def _canonical_key(key: Any) -> Any:
    if type(key) in _SCALARS:
        return key
    if isinstance(key, tuple):
        return tuple(_canonical_key(k) for k in key)
    return _scalar(key)


def _first(entry: tuple[bytes, Any, Any]) -> bytes:
    return entry[0]


def canonical_packb(obj: Any) -> bytes:
    """Encode ``obj`` as canonical msgpack (see the module docstring for the rules)."""
    return _pack_checked(canonicalize(obj))


def digest(data: Mapping[Any, Any]) -> int:
    """xxh3_64 (seed 0, unsigned) of the canonical encoding of a partition's ``data`` map."""
    if not isinstance(data, Mapping):
        raise TypeError(f"digest() takes a mapping, not {type(data).__name__}")
    return xxhash.xxh3_64_intdigest(canonical_packb(data))
