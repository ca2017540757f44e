"""genimage configurations (genimage.cfg) read as fstool disk specs.

genimage's files are libconfuse text: `image NAME { TYPE { key = value ... } partition
NAME { ... } }`, values quoted or bare (`32M`, `0x83`, `true`), lists in braces, comments
`#`, `//` and `/* */`. This module parses that syntax and translates one top-level
image into the spec document `fstool.spec` reads (the same dict a TOML spec gives):

- `hdimage` -> `[image]` (partition-table-type, align, gpt-location, disk-signature,
  disk-uuid, fill) and its `partition` sections -> `[[partitions]]` (offset, size,
  image, in-partition-table, partition-type, partition-type-uuid, partition-uuid,
  bootable, read-only, hidden, no-automount, holes, align, fill, autoresize);
- a partition's `image` naming a `vfat`, `ext2/3/4` or `squashfs` image of the same file
  becomes that partition's `[partitions.filesystem]`, filled from
  `${rootpath}${mountpoint}` (or `srcpath`, or `files`/`file` from `inputpath` for vfat);
  any other image name is a file in `inputpath`;
- `android-sparse` and `qemu` images around an hdimage choose the output container.

Invariant: every key genimage defines that fstool cannot honour is a one-line SpecError
naming the key and where it is (`genimage.cfg:12: image boot.vfat: vfat: extraargs ...`);
nothing is silently dropped.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

# --- the libconfuse syntax -------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+) | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/) |
    (?P<string>"(?:[^"\\]|\\.)*") | (?P<sq>'[^']*') |
    (?P<punct>[{}=,()]) | (?P<word>[^\s{}=,()"'\#]+)
""", re.S | re.X)


@dataclass
class Section:
    kind: str
    title: str | None
    line: int
    opts: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    children: list["Section"] = field(default_factory=list)


def _tokens(text: str, path: str) -> list[tuple[str, str, int]]:
    out, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SpecError(f"unexpected character {text[pos]!r}", where=f"{path}:{line}")
        kind = m.lastgroup
        val = m.group()
        if kind == "string":
            out.append(("str", re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)),
                                      val[1:-1]), line))
        elif kind == "sq":
            out.append(("str", val[1:-1], line))
        elif kind in ("punct", "word"):
            out.append((val if kind == "punct" else "word", val, line))
        line += val.count("\n")
        pos = m.end()
    return out


def parse(text: str, path: str = "genimage.cfg") -> Section:
    toks = _tokens(text, path)
    pos = 0

    def peek(k=0):
        return toks[pos + k] if pos + k < len(toks) else ("eof", "", toks[-1][2] if toks else 1)

    def scalar():
        nonlocal pos
        t = peek()
        if t[0] not in ("str", "word"):
            raise SpecError(f"expected a value, found {t[1] or 'the end'!r}", where=f"{path}:{t[2]}")
        pos += 1
        return t[1]

    def block(sec: Section, closing: bool, depth: int = 0):
        nonlocal pos
        if depth > 16:  # genimage nests 3 deep; a deeper file is not a genimage config
            raise SpecError("sections nested more than 16 deep", where=f"{path}:{sec.line}")
        while True:
            t = peek()
            if t[0] == "eof":
                if closing:
                    raise SpecError(f"section {sec.kind} opened on line {sec.line} is never closed",
                                    where=path)
                return
            if t[0] == "}":
                if not closing:
                    raise SpecError("unexpected '}'", where=f"{path}:{t[2]}")
                pos += 1
                return
            if t[0] != "word":
                raise SpecError(f"expected a key or a section, found {t[1]!r}", where=f"{path}:{t[2]}")
            name, line = t[1], t[2]
            pos += 1
            nxt = peek()
            if nxt[0] == "=":
                pos += 1
                if peek()[0] == "{":
                    pos += 1
                    items = []
                    while peek()[0] != "}":
                        items.append(scalar())
                        if peek()[0] == ",":
                            pos += 1
                        elif peek()[0] != "}":
                            raise SpecError(f"expected ',' or '}}' in the list of {name}",
                                            where=f"{path}:{peek()[2]}")
                    pos += 1
                    sec.opts[name] = items
                else:
                    sec.opts[name] = scalar()
                sec.lines[name] = line
            elif nxt[0] == "(":
                raise SpecError(f"{name}(...) is not supported (write the included file's sections "
                                f"into this one)", where=f"{path}:{line}")
            else:
                title = None
                if nxt[0] in ("word", "str"):
                    title = nxt[1]
                    pos += 1
                if peek()[0] != "{":
                    raise SpecError(f"expected '=' or '{{' after {name!r}", where=f"{path}:{line}")
                pos += 1
                child = Section(name, title, line)
                sec.children.append(child)
                block(child, True, depth + 1)

    root = Section("<top>", None, 1)
    block(root, False)
    return root


# --- translation to a spec document ----------------------------------------------------

FS_TYPES = {"vfat": "fat", "ext2": "ext2", "ext3": "ext3", "ext4": "ext4", "squashfs": "squashfs"}
CONTAINER_TYPES = ("android-sparse", "qemu")
IMAGE_KEYS = {"name", "size", "mountpoint", "srcpath", "empty", "temporary"}
HD_KEYS = {"partition-table-type", "align", "gpt-location", "disk-signature", "disk-uuid", "fill",
           "partition-table", "gpt"}
PART_KEYS = {"offset", "size", "image", "in-partition-table", "partition-type", "partition-type-uuid",
             "partition-uuid", "bootable", "read-only", "hidden", "no-automount", "holes", "align", "fill",
             "autoresize"}
FS_KEYS = {"vfat": {"label", "files"}, "ext2": {"label", "use-mke2fs", "fs-timestamp"},
           "squashfs": {"compression", "block-size"}}
FS_KEYS["ext3"] = FS_KEYS["ext4"] = FS_KEYS["ext2"]
SPARSE_KEYS = {"image", "block-size", "add-crc"}
QEMU_KEYS = {"format"}
# genimage's partition-type-uuid shortcuts (image-hd.c), as fstool type names
GPT_SHORTCUTS = {"L": "linux", "S": "linux-swap", "H": "linux-home", "U": "esp", "R": "linux-raid",
                 "V": "linux-lvm", "F": "msdata"}


def _size(v: str, where: str) -> int:
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([kKMGs]?)\s*", str(v))
    if not m:
        raise SpecError(f"{v!r} is not a size fstool understands (a number with k, K, M, G or s)",
                        where=where)
    n = int(m.group(1), 0)
    return n * {"": 1, "k": 1024, "K": 1024, "M": 1 << 20, "G": 1 << 30, "s": 512}[m.group(2)]


def _number(v: Any, where: str, hi: int) -> int:
    """An integer as libconfuse reads one (decimal, 0x hex, leading-0 octal), 0..hi."""
    s = str(v).strip()
    try:
        n = int(s, 8) if re.fullmatch(r"0[0-7]+", s) else int(s, 0)
    except ValueError:
        raise SpecError(f"expected a number, got {v!r}", where=where) from None
    if not 0 <= n <= hi:
        raise SpecError(f"{n} is out of range (0 to {hi:#x})", where=where)
    return n


def _bool(v: Any, where: str) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "yes", "on", "1"):
        return True
    if s in ("false", "no", "off", "0"):
        return False
    raise SpecError(f"expected true or false, got {v!r}", where=where)


def _check(sec: Section, allowed: set[str], path: str, what: str) -> None:
    for k in sec.opts:
        if k not in allowed:
            raise SpecError(f"{what}: genimage key {k!r} is not supported by fstool "
                            f"(supported here: {', '.join(sorted(allowed))})",
                            where=f"{path}:{sec.lines.get(k, sec.line)}")
    for c in sec.children:
        if not (what.endswith("vfat") and c.kind == "file"):
            raise SpecError(f"{what}: genimage section {c.kind!r} is not supported by fstool",
                            where=f"{path}:{c.line}")


@dataclass
class Translation:
    doc: dict  # the spec document
    manifests: dict[str, list]  # manifest file name -> entries (vfat `files`)
    image: str  # the genimage image translated


def _type_section(img: Section, path: str) -> Section:
    types = [c for c in img.children if c.kind != "partition"]
    if len(types) != 1:
        raise SpecError(f"image {img.title}: expected one image type section, found "
                        f"{', '.join(c.kind for c in types) or 'none'}", where=f"{path}:{img.line}")
    return types[0]


def translate(root: Section, path: str, *, rootpath: str | None, inputpath: str,
              image: str | None = None) -> Translation:
    images: dict[str, Section] = {}
    for c in root.children:
        if c.kind == "config":
            continue  # genimage's own defaults (paths): the command line gives ours
        if c.kind != "image" or not c.title:
            raise SpecError(f"top-level section {c.kind!r} is not supported (only image NAME {{...}})",
                            where=f"{path}:{c.line}")
        images[c.title] = c
    if not images:
        raise SpecError("no image sections", where=path)
    referenced = set()
    for img in images.values():
        for c in img.children:
            if c.kind == "partition" and "image" in c.opts:
                referenced.add(c.opts["image"])
            if c.kind in CONTAINER_TYPES and "image" in c.opts:
                referenced.add(c.opts["image"])
    if image is None:
        top = [n for n in images if n not in referenced]
        if len(top) != 1:
            raise SpecError(f"the config has {len(top)} top-level images ({', '.join(top)}); "
                            f"name one with --image", where=path)
        image = top[0]
    if image not in images:
        raise SpecError(f"no image {image!r} (images: {', '.join(images)})", where=path)
    tr = Translation(doc={}, manifests={}, image=image)
    img = images[image]
    kind = _type_section(img, path)
    fmt = None
    if kind.kind in CONTAINER_TYPES:
        if kind.kind == "android-sparse":
            _check(kind, SPARSE_KEYS, path, f"image {image}: android-sparse")
            if "block-size" in kind.opts and _size(kind.opts["block-size"], path) != 4096:
                raise SpecError(f"image {image}: android-sparse: block-size must be 4096 for fstool",
                                where=f"{path}:{kind.lines['block-size']}")
            crc = _bool(kind.opts.get("add-crc", "false"), path)
            fmt = "android-sparse-crc" if crc else "android-sparse"
        else:
            _check(kind, QEMU_KEYS | {"image"}, path, f"image {image}: qemu")
            f = str(kind.opts.get("format", "qcow2"))
            if f not in ("qcow2", "raw"):
                raise SpecError(f"image {image}: qemu: format {f!r} is not supported (qcow2 or raw)",
                                where=f"{path}:{kind.lines.get('format', kind.line)}")
            fmt = f
        inner = kind.opts.get("image")
        if inner not in images:
            raise SpecError(f"image {image}: {kind.kind} needs image = NAME of an hdimage in this "
                            f"file", where=f"{path}:{kind.line}")
        img = images[inner]
        kind = _type_section(img, path)
    if kind.kind != "hdimage":
        if kind.kind in FS_TYPES:
            fs = _filesystem(img, kind, images, path, rootpath, inputpath, tr)
            tr.doc = {"filesystem": fs}
            if fmt:
                raise SpecError("a container around a single filesystem: use fstool build --format",
                                where=f"{path}:{img.line}")
            return tr
        raise SpecError(f"image {img.title}: genimage type {kind.kind!r} is not supported by fstool "
                        f"(supported: hdimage, vfat, ext2, ext3, ext4, squashfs, android-sparse, qemu)",
                        where=f"{path}:{kind.line}")
    tr.doc = _hdimage(img, kind, images, path, rootpath, inputpath, tr)
    if fmt:
        tr.doc["image"]["format"] = fmt
    return tr


def _hdimage(img: Section, hd: Section, images, path, rootpath, inputpath, tr: Translation) -> dict:
    _check(hd, HD_KEYS, path, f"image {img.title}: hdimage")
    _check_image(img, path, allow_partitions=True)
    where = lambda k: f"{path}:{hd.lines.get(k, hd.line)}"  # noqa: E731
    table = str(hd.opts.get("partition-table-type", "mbr")).lower()
    if "gpt" in hd.opts and _bool(hd.opts["gpt"], where("gpt")):
        table = "gpt"
    if "partition-table" in hd.opts and not _bool(hd.opts["partition-table"], where("partition-table")):
        table = "none"
    if table not in ("mbr", "gpt", "hybrid"):
        raise SpecError(f"partition-table-type {table!r} is not supported (mbr, gpt, hybrid)",
                        where=where("partition-table-type"))
    image: dict[str, Any] = {"partition_table": table,
                             "alignment": _size(hd.opts.get("align", "512"), where("align"))}
    if "size" in img.opts:
        image["size"] = _size(img.opts["size"], f"{path}:{img.lines['size']}")
    if "gpt-location" in hd.opts:
        image["gpt_location"] = _size(hd.opts["gpt-location"], where("gpt-location"))
    if "disk-signature" in hd.opts:
        v = str(hd.opts["disk-signature"])
        if v == "random":
            raise SpecError("disk-signature = random is not reproducible; give a number",
                            where=where("disk-signature"))
        image["disk_signature"] = f"0x{_number(v, where('disk-signature'), 0xFFFFFFFF):08x}"
    if "disk-uuid" in hd.opts:
        image["uuid"] = str(hd.opts["disk-uuid"])
    if "fill" in hd.opts:
        image["fill"] = _bool(hd.opts["fill"], where("fill"))
    parts = []
    for sec in img.children:
        if sec.kind != "partition":
            continue
        parts.append(_partition(sec, table, images, path, rootpath, inputpath, tr))
    if not parts:
        raise SpecError(f"image {img.title}: an hdimage needs at least one partition", where=f"{path}:{img.line}")
    return {"image": image, "partitions": parts}


def _check_image(img: Section, path: str, allow_partitions: bool = False) -> None:
    for k in img.opts:
        if k not in IMAGE_KEYS:
            raise SpecError(f"image {img.title}: genimage key {k!r} is not supported by fstool "
                            f"(supported: {', '.join(sorted(IMAGE_KEYS))})",
                            where=f"{path}:{img.lines.get(k, img.line)}")
    if not allow_partitions:
        for c in img.children:
            if c.kind == "partition":
                raise SpecError(f"image {img.title}: partitions belong in an hdimage",
                                where=f"{path}:{c.line}")


def _partition(sec: Section, table: str, images, path, rootpath, inputpath, tr: Translation) -> dict:
    name = sec.title or ""
    what = f"partition {name}"
    for k in sec.opts:
        if k not in PART_KEYS:
            raise SpecError(f"{what}: genimage key {k!r} is not supported by fstool "
                            f"(supported: {', '.join(sorted(PART_KEYS))})",
                            where=f"{path}:{sec.lines[k]}")
    for c in sec.children:
        raise SpecError(f"{what}: section {c.kind!r} is not supported", where=f"{path}:{c.line}")
    w = lambda k: f"{path}:{sec.lines.get(k, sec.line)}"  # noqa: E731
    p: dict[str, Any] = {"name": name}
    in_table = _bool(sec.opts.get("in-partition-table", "true"), w("in-partition-table"))
    if not in_table:
        p["in_partition_table"] = False
    for k in ("offset", "size", "align"):
        if k in sec.opts:
            p[k] = _size(sec.opts[k], w(k))
    if "autoresize" in sec.opts and _bool(sec.opts["autoresize"], w("autoresize")):
        if "size" in p:
            raise SpecError(f"{what}: autoresize and size exclude each other", where=w("autoresize"))
        p["size"] = "remaining"  # grows to the end of the disk (needs the hdimage's size)
    if "holes" in sec.opts:
        v = sec.opts["holes"]
        p["holes"] = list(v) if isinstance(v, list) else [v]
    if "fill" in sec.opts:
        p["fill"] = _bool(sec.opts["fill"], w("fill"))
    if in_table:
        ptype = sec.opts.get("partition-type")
        tuuid = sec.opts.get("partition-type-uuid")
        if table == "mbr" and tuuid is not None:
            raise SpecError(f"{what}: partition-type-uuid needs a gpt or hybrid table",
                            where=w("partition-type-uuid"))
        if table == "gpt" and ptype is not None:
            raise SpecError(f"{what}: partition-type needs an mbr or hybrid table", where=w("partition-type"))
        if table == "mbr" and ptype is not None:
            p["type"] = f"0x{_number(ptype, w('partition-type'), 0xFF):02x}"
        if table in ("gpt", "hybrid"):
            if tuuid is not None:
                t = str(tuuid)
                p["type"] = GPT_SHORTCUTS.get(t, GPT_SHORTCUTS.get(t.upper(), t)) if len(t) == 1 else t
            if table == "hybrid" and ptype is not None:
                p["mbr_type"] = f"0x{_number(ptype, w('partition-type'), 0xFF):02x}"
        if "partition-uuid" in sec.opts:
            p["uuid"] = str(sec.opts["partition-uuid"])
        attrs = []
        for k, a in (("read-only", "read-only"), ("hidden", "hidden"), ("no-automount", "no-auto")):
            if k in sec.opts and _bool(sec.opts[k], w(k)):
                attrs.append(a)
        boot = "bootable" in sec.opts and _bool(sec.opts["bootable"], w("bootable"))
        if boot and table in ("gpt", "hybrid"):  # genimage sets the GPT flag (bit 2) ...
            attrs.append("legacy-bios-bootable")
        if boot and (table == "mbr" or "mbr_type" in p):  # ... and the MBR flag where mirrored
            p["bootable"] = True
        if attrs:
            if table == "mbr":
                raise SpecError(f"{what}: read-only, hidden and no-automount are GPT flags",
                                where=w(next(k for k in ("read-only", "hidden", "no-automount") if k in sec.opts)))
            p["attributes"] = attrs
    ref = sec.opts.get("image")
    if ref is not None:
        if ref in images:
            sub = images[ref]
            kind = _type_section(sub, path)
            if kind.kind not in FS_TYPES:
                raise SpecError(f"{what}: image {ref} is a {kind.kind}; a partition holds a vfat, ext2/3/4 "
                                f"or squashfs image or a file from inputpath", where=w("image"))
            p["filesystem"] = _filesystem(sub, kind, images, path, rootpath, inputpath, tr)
        else:
            p["image"] = os.path.join(inputpath, ref)
    elif "size" not in p:
        raise SpecError(f"{what}: needs an image or a size", where=f"{path}:{sec.line}")
    return p


def _filesystem(img: Section, kind: Section, images, path, rootpath, inputpath, tr: Translation) -> dict:
    _check_image(img, path)
    what = f"image {img.title}: {kind.kind}"
    _check(kind, FS_KEYS[kind.kind], path, what)
    w = lambda k: f"{path}:{kind.lines.get(k, kind.line)}"  # noqa: E731
    fs: dict[str, Any] = {"type": FS_TYPES[kind.kind]}
    if "size" in img.opts:
        v = str(img.opts["size"])
        if v.endswith("%"):
            raise SpecError(f"{what}: a size in percent is not supported; give bytes or drop the "
                            f"size (fstool sizes filesystems to fit)", where=f"{path}:{img.lines['size']}")
        fs["size"] = _size(v, f"{path}:{img.lines['size']}")
    if "label" in kind.opts:
        fs["label"] = str(kind.opts["label"])
    if "fs-timestamp" in kind.opts:
        raise SpecError(f"{what}: fs-timestamp: set SOURCE_DATE_EPOCH or the spec's mtime instead",
                        where=w("fs-timestamp"))
    if kind.kind == "squashfs":
        opts = {}
        if "compression" in kind.opts:
            c = str(kind.opts["compression"])
            if c == "none":
                raise SpecError(f"{what}: compression = none is not supported", where=w("compression"))
            opts["compression"] = c
        if "block-size" in kind.opts:
            fs["block_size"] = _size(kind.opts["block-size"], w("block-size"))
        if opts:
            fs["options"] = opts
    files = [c for c in kind.children if c.kind == "file"]
    if kind.kind == "vfat" and ("files" in kind.opts or files):
        entries: list[dict] = []
        listed = kind.opts.get("files", [])
        for f in (listed if isinstance(listed, list) else [listed]):
            entries.append({"kind": "file", "path": "/" + os.path.basename(f),
                            "source": os.path.join(inputpath, f)})
        for c in files:
            for k in c.opts:
                if k != "image":
                    raise SpecError(f"{what}: file {c.title}: key {k!r} is not supported",
                                    where=f"{path}:{c.lines[k]}")
            if "image" not in c.opts:
                raise SpecError(f"{what}: file {c.title}: needs image = ...", where=f"{path}:{c.line}")
            entries.append({"kind": "file", "path": "/" + str(c.title).lstrip("/"),
                            "source": os.path.join(inputpath, c.opts["image"])})
        # parent directories of nested names
        dirs = sorted({os.path.dirname(e["path"]) for e in entries} - {"/"})
        full = set()
        for d in dirs:
            while d not in ("/", ""):
                full.add(d)
                d = os.path.dirname(d)
        entries = [{"kind": "dir", "path": d, "mode": "0755"} for d in sorted(full)] + entries
        name = f"{img.title}.manifest.json"
        tr.manifests[name] = entries
        fs["source"] = name
        return fs
    if "empty" in img.opts and _bool(img.opts["empty"], path):
        return fs
    if "srcpath" in img.opts:
        fs["source"] = str(img.opts["srcpath"])
        return fs
    if rootpath is None:
        raise SpecError(f"{what}: is filled from rootpath; pass --rootpath DIR", where=f"{path}:{img.line}")
    mp = str(img.opts.get("mountpoint", "/")).strip("/")
    fs["source"] = os.path.join(rootpath, mp) if mp else rootpath
    return fs


def write_manifests(tr: Translation, directory: str) -> None:
    """Write the vfat `files` manifests into directory. Their sources (absolute, or relative
    to directory as the translated spec's paths are) are written relative to the manifest."""
    from .image import atomic_output
    for name, entries in tr.manifests.items():
        fixed = []
        for e in entries:
            e = dict(e)
            if "source" in e:
                e["source"] = os.path.relpath(os.path.join(os.path.abspath(directory), e["source"]),
                                              os.path.abspath(directory))
            fixed.append(e)
        doc = {"version": 1, "relative_to": "manifest", "entries": fixed}
        with atomic_output(os.path.join(directory, name)) as out:
            out.pwrite(json.dumps(doc, indent=1).encode() + b"\n", 0)


def load(path: str, *, rootpath: str | None, inputpath: str, image: str | None = None) -> Translation:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        from .errors import InputError
        raise InputError(getattr(e, "strerror", None) or str(e), where=path) from None
    return translate(parse(text, path), path, rootpath=rootpath, inputpath=inputpath, image=image)


# --- writing the spec as TOML ----------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def to_toml(doc: dict) -> str:
    """The spec document as TOML (the subset our documents use: tables, arrays of tables)."""
    lines = ["# Generated by fstool import-genimage", ""]
    if "relative_to" in doc:  # top-level keys come before the first table
        lines += [f"relative_to = {_toml_value(doc['relative_to'])}", ""]

    def table(header: str, d: dict) -> None:
        simple = {k: v for k, v in d.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        lines.append(header)
        for k, v in simple.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
        name = header.strip("[]")
        for k, v in subs.items():
            table(f"[{name}.{k}]", v)

    if "filesystem" in doc:
        table("[filesystem]", doc["filesystem"])
    if "image" in doc:
        table("[image]", doc["image"])
        for p in doc["partitions"]:
            simple = {k: v for k, v in p.items() if not isinstance(v, dict)}
            lines.append("[[partitions]]")
            for k, v in simple.items():
                lines.append(f"{k} = {_toml_value(v)}")
            lines.append("")
            for k, v in p.items():
                if isinstance(v, dict):
                    table(f"[partitions.{k}]", v)
    return "\n".join(lines)
