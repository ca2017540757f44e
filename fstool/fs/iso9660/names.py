"""File identifiers for the three name spaces of an image.

- ISO 9660 (ECMA-119 7.5, 7.6 at interchange level 2 and 3): d-characters only (A-Z, 0-9, _),
  a file is NAME.EXT;1 with NAME and EXT together at most 30 characters, a directory at most 31
  characters without a dot. Anything else becomes "_"; clashes in one directory take a _N tail.
- Joliet: UCS-2 big-endian, at most 64 characters, without * / : ; ? \\ (files get ";1"); clashes,
  compared case-blind as Windows does, take a ~N tail.
- Rock Ridge keeps the real name (NM), so these mangled ones only matter to plain readers.

Names are made for a directory's children in sorted order (by the real name's bytes), so the same
tree always gets the same identifiers.
"""
from __future__ import annotations


D_CHARS = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
JOLIET_BAD = set("*/:;?\\")
JOLIET_MAX = 64


def _dchars(s: str) -> str:
    return "".join(c if ord(c) < 128 and ord(c.upper()) in D_CHARS else "_" for c in s.upper())


def iso_name(name: str, is_dir: bool) -> tuple[str, str]:
    """(base, extension) of the ISO 9660 identifier for name, before uniqueness."""
    if is_dir:
        return _dchars(name)[:31] or "_", ""
    base, dot, ext = name.rpartition(".")
    if not dot or not base:
        base, ext = name, ""
    base, ext = _dchars(base), _dchars(ext)[:8]
    return (base[:30 - len(ext)] or "_"), ext


def iso_sort_key(ident: bytes) -> tuple[bytes, bytes]:
    """ECMA-119 9.3: records ordered by name then extension, the shorter padded with spaces."""
    ident = ident.split(b";")[0]
    base, _, ext = ident.partition(b".")
    return base.ljust(31, b" "), ext.ljust(31, b" ")


def assign_iso(children: list[tuple[str, bool]]) -> list[bytes]:
    """Unique ISO identifiers (with ";1" on files) for (name, is_dir) pairs, in the given order."""
    used: set[tuple[str, str]] = set()
    out = []
    for name, is_dir in children:
        base, ext = iso_name(name, is_dir)
        limit = 31 if is_dir else 30 - len(ext)
        cand, n = base, 1
        while (cand, ext) in used:
            tail = f"_{n}"  # "~" is no d-character
            cand = base[:limit - len(tail)] + tail
            n += 1
        used.add((cand, ext))
        ident = cand if is_dir else f"{cand}.{ext};1"
        out.append(ident.encode("ascii"))
    return out


def _joliet_clean(name: str) -> str:
    return "".join("_" if (c in JOLIET_BAD or ord(c) < 32 or ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF)
                   else c for c in name)


def assign_joliet(children: list[tuple[str, bool]]) -> list[bytes]:
    """Unique Joliet identifiers (UCS-2 big-endian, ";1" on files) for (name, is_dir) pairs."""
    used: set[str] = set()
    out = []
    for name, is_dir in children:
        clean = _joliet_clean(name)
        cand = clean[:JOLIET_MAX]
        n = 1
        while cand.lower() in used:  # Windows compares names case-insensitively
            tail = f"~{n}"
            stem, dot, ext = clean.rpartition(".")
            if not dot or is_dir or len(ext) > 16:
                stem, ext, dot = clean, "", ""
            cand = stem[:JOLIET_MAX - len(tail) - len(dot + ext)] + tail + dot + ext
            n += 1
        used.add(cand.lower())
        out.append((cand + ("" if is_dir else ";1")).encode("utf-16-be"))
    return out

