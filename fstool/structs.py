"""Declared on-disk records: a record is a list of (field name, struct code), in on-disk order.

    EXTENT_HEADER = Record("extent_header", [
        ("magic", "H"), ("entries", "H"), ("max", "H"), ("depth", "H"), ("generation", "I")])
    raw = EXTENT_HEADER.pack(magic=0xF30A, entries=1, max=4)   # unnamed fields are zero
    h = EXTENT_HEADER.unpack(raw)                              # a named tuple: h.entries
    EXTENT_HEADER.offset("depth")                              # 6
    EXTENT_HEADER.size                                         # 12

Invariants: offsets and the size follow from the codes alone (standard sizes, no
alignment: the byte order prefix is always explicit); a padding code ("3x") has the name
None and appears in no tuple; `pack` refuses a field the record does not have, and a field
left out packs as zero (numbers) or as zero bytes (byte strings); `unpack(buf, off)` reads
exactly `size` bytes at `off`. The code that uses a record names its fields and never its
offsets: an offset needed for a checksum or a bounds check comes from `offset(name)`.
"""
from __future__ import annotations

import keyword
import struct
from collections import namedtuple
from typing import Any, Iterable

__all__ = ["Record"]


class Record:
    """One fixed-size on-disk record."""

    __slots__ = ("name", "fields", "struct", "size", "_offsets", "_sizes", "_index", "_defaults", "_tuple",
                 "pack", "pack_into")

    def __init__(self, name: str, layout: Iterable[tuple[str | None, str]], byte_order: str = "<"):
        if byte_order not in ("<", ">"):
            raise ValueError("byte order must be '<' or '>'")
        layout = list(layout)
        self.name = name
        fmt = byte_order
        offsets: dict[str, int] = {}
        sizes: dict[str, int] = {}
        names: list[str] = []
        defaults: list[Any] = []
        for fname, code in layout:
            off = struct.calcsize(fmt)
            fmt += code
            if fname is None:
                if not code.endswith("x"):
                    raise ValueError(f"{name}: only padding ('x') may be unnamed, not {code!r}")
                continue
            if fname in offsets:
                raise ValueError(f"{name}: field {fname!r} declared twice")
            if code.endswith("x"):
                raise ValueError(f"{name}: padding {fname!r} must be unnamed")
            offsets[fname] = off
            sizes[fname] = struct.calcsize(byte_order + code)
            names.append(fname)
            defaults.append(b"" if code.endswith("s") else 0)
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.fields: tuple[str, ...] = tuple(names)
        self._offsets = offsets
        self._sizes = sizes
        self._index = {n: i for i, n in enumerate(names)}
        self._defaults = tuple(defaults)
        # `pack`, `pack_into` and the named tuple are made on first use (__getattr__): a
        # format declares dozens of records and a build uses some, and making them all cost
        # 4 ms of an ext4 build's start

    def __getattr__(self, attr: str) -> Any:
        if attr in ("pack", "pack_into"):
            self._compile()
        elif attr == "_tuple":
            self._tuple = namedtuple(self.name, self.fields)  # type: ignore[misc]
        else:
            raise AttributeError(attr)
        return object.__getattribute__(self, attr)

    def offset(self, field: str) -> int:
        """Byte offset of a field from the start of the record."""
        return self._offsets[field]

    def end(self, field: str) -> int:
        """Byte offset just past a field."""
        return self._offsets[field] + self._sizes[field]

    def field_size(self, field: str) -> int:
        return self._sizes[field]

    def values(self, fields: dict[str, Any]) -> list[Any]:
        vals = list(self._defaults)
        index = self._index
        for k, v in fields.items():
            try:
                vals[index[k]] = v
            except KeyError:
                raise TypeError(f"{self.name} has no field {k!r}") from None
        return vals

    def _pack(self, **fields: Any) -> bytes:
        """The record's bytes; fields not given are zero."""
        return self.struct.pack(*self.values(fields))

    def _pack_into(self, buf: bytearray | memoryview, off: int, **fields: Any) -> None:
        self.struct.pack_into(buf, off, *self.values(fields))

    def _compile(self) -> None:
        """`pack` and `pack_into` as functions taking the fields as keyword-only arguments with
        their zero defaults: CPython matches the keywords, a third of the generic path's
        cost (every inode and directory entry goes through here). Names that cannot be
        Python parameters keep the generic path."""
        names = self.fields
        if not all(n.isidentifier() and not keyword.iskeyword(n) and not n.startswith("_") for n in names):
            self.pack, self.pack_into = self._pack, self._pack_into
            return
        params = ", ".join(f"{n}={d!r}" for n, d in zip(names, self._defaults))
        args = ", ".join(names)
        star = "*, " if names else ""
        src = (f"def pack({star}{params}):\n    return _pack({args})\n"
               f"def pack_into(_buf, _off, {star}{params}):\n    _pack_into(_buf, _off, {args})\n")
        ns: dict[str, Any] = {"_pack": self.struct.pack, "_pack_into": self.struct.pack_into}
        exec(compile(src, f"<record {self.name}>", "exec"), ns)  # noqa: S102 - our own field names
        for fn in ("pack", "pack_into"):  # a stray keyword reads "<record>.pack() got an unexpected ..."
            ns[fn].__qualname__ = f"{self.name}.{fn}"
        self.pack, self.pack_into = ns["pack"], ns["pack_into"]

    def unpack(self, buf: bytes | bytearray | memoryview, off: int = 0):
        """A named tuple of the record's fields read at off."""
        return self._tuple._make(self.struct.unpack_from(buf, off))

    def iter_unpack(self, buf: bytes | bytearray | memoryview):
        """Named tuples of the back-to-back records filling buf."""
        make = self._tuple._make
        return (make(v) for v in self.struct.iter_unpack(buf))

    def __repr__(self) -> str:
        return f"Record({self.name!r}, {self.size} bytes)"

