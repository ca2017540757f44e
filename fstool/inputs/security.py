"""Security metadata declared instead of inherited: xattr values, file capabilities, POSIX ACLs,
SELinux labels from a policy's file_contexts, and Android fs_config tables.

Everything here turns text a user can review (and Bazel can hash) into the exact xattr
bytes the kernel's tools write, so an image carries `security.capability`,
`security.selinux` and `system.posix_acl_*` without root, fakeroot or setfiles:
- capabilities: the bytes `setcap` writes (struct vfs_cap_data revision 2, or revision 3
  with a root uid), from libcap's text form ("cap_net_raw,cap_net_admin+ep");
- ACLs: the VFS form of `system.posix_acl_access` / `_default` (version 2, 8-byte
  entries sorted by tag and id), from the short text form tar and getfacl use;
- SELinux: each entry's context by libselinux's rule (the last matching line wins, lines
  whose regex has no meta characters after all others), NUL-terminated as setfiles stores it;
- fs_config: the text form `e2fsdroid -C` reads (path uid gid mode [capabilities=MASK]).
Nothing here reads the host's user database, policy store or clock.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from ..errors import InputError, SpecError, did_you_mean
from ..tree import Kind, Tree, split_path

# -- xattr values ---------------------------------------------------------------------------


def parse_xattr_value(v: object, where: str) -> bytes:
    """A declared xattr value: "0x" hex, "base64:" data, or text (stored as UTF-8, no NUL)."""
    if not isinstance(v, str):
        raise SpecError(f"an xattr value is a string (text, 0x... hex or base64:...), got {v!r}",
                        where=where)
    if v.startswith(("0x", "0X")):
        try:
            return binascii.unhexlify(v[2:])
        except (binascii.Error, ValueError):
            raise SpecError(f"bad hex value {v!r}", where=where) from None
    if v.startswith("base64:"):
        try:
            return base64.b64decode(v[7:], validate=True)
        except (binascii.Error, ValueError):
            raise SpecError("bad base64 value", where=where) from None
    return v.encode("utf-8")


def check_xattr_name(name: object, where: str) -> str:
    if not isinstance(name, str) or "." not in name or name.startswith(".") or name.endswith("."):
        raise SpecError(f"xattr names look like 'user.comment' or 'security.selinux', got {name!r}",
                        where=where)
    if len(name.encode()) > 255:
        raise SpecError("xattr names are at most 255 bytes", where=where)
    return name


# -- capabilities (linux/capability.h, libcap's cap_from_text) ------------------------------

CAP_NAMES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill",
    "cap_setgid", "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service",
    "cap_net_broadcast", "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner",
    "cap_sys_module", "cap_sys_rawio", "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct",
    "cap_sys_admin", "cap_sys_boot", "cap_sys_nice", "cap_sys_resource", "cap_sys_time",
    "cap_sys_tty_config", "cap_mknod", "cap_lease", "cap_audit_write", "cap_audit_control",
    "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog", "cap_wake_alarm",
    "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)
CAP_BY_NAME = {n: i for i, n in enumerate(CAP_NAMES)}
ALL_CAPS = (1 << len(CAP_NAMES)) - 1
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
CAP_V2 = struct.Struct("<IIIII")  # magic_etc, permitted lo, inheritable lo, permitted hi, inheritable hi
CAP_V3 = struct.Struct("<IIIIII")  # ... and rootid
_CLAUSE = re.compile(r"^([^=+\-]*)((?:[=+\-][eip]*)+)$")


@dataclass(frozen=True)
class CapSet:
    permitted: int = 0
    inheritable: int = 0
    effective: int = 0


def parse_capabilities(text: str, where: str) -> CapSet:
    """libcap's text form: clauses separated by spaces, each `names OPS` where names are
    comma-separated (cap_x or a number, or 'all'; empty with '=' means all) and each op is
    '=', '+' or '-' followed by flags from e, i, p."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("capabilities look like \"cap_net_raw,cap_net_admin+ep\"", where=where)
    sets = {"e": 0, "i": 0, "p": 0}
    for clause in text.split():
        m = _CLAUSE.match(clause.lower())
        if not m:
            raise SpecError(f"cannot read capability clause {clause!r} "
                            "(expected names followed by =, + or - and flags e, i, p)", where=where)
        names, ops = m.groups()
        mask = 0
        if names in ("", "all"):
            if names == "" and not ops.startswith("="):
                raise SpecError(f"{clause!r}: only '=' may stand without names", where=where)
            mask = ALL_CAPS
        else:
            for name in names.split(","):
                if name.isdigit() and int(name) < len(CAP_NAMES):
                    mask |= 1 << int(name)
                elif name in CAP_BY_NAME or "cap_" + name in CAP_BY_NAME:
                    mask |= 1 << CAP_BY_NAME.get(name, CAP_BY_NAME.get("cap_" + name, 0))
                else:
                    hint = did_you_mean(name, CAP_NAMES)
                    raise SpecError(f"unknown capability {name!r}{hint}", where=where)
        for op, flags in re.findall(r"([=+\-])([eip]*)", ops):
            if op == "=":
                for f in "eip":
                    sets[f] &= ~mask
            for f in flags:
                sets[f] = sets[f] | mask if op in "=+" else sets[f] & ~mask
    return CapSet(permitted=sets["p"], inheritable=sets["i"], effective=sets["e"])


def encode_capabilities(caps: CapSet, rootid: int | None = None) -> bytes:
    """security.capability as setcap writes it. File capabilities keep one effective bit:
    set when any capability is effective (libcap refuses a partial effective set)."""
    magic = (VFS_CAP_REVISION_3 if rootid is not None else VFS_CAP_REVISION_2)
    if caps.effective:
        magic |= VFS_CAP_FLAGS_EFFECTIVE
    p, i = caps.permitted, caps.inheritable
    fields = (magic, p & 0xFFFFFFFF, i & 0xFFFFFFFF, p >> 32, i >> 32)
    if rootid is not None:
        return CAP_V3.pack(*fields, rootid)
    return CAP_V2.pack(*fields)


def capability_xattr(text: str, where: str, rootid: int | None = None) -> bytes:
    caps = parse_capabilities(text, where)
    if caps.effective and caps.effective & ~(caps.permitted | caps.inheritable):
        raise SpecError("an effective capability must also be permitted or inheritable", where=where)
    return encode_capabilities(caps, rootid)


# -- POSIX ACLs (linux/posix_acl_xattr.h) ---------------------------------------------------

ACL_VERSION = 2
ACL_TAGS = {"user_obj": 0x01, "user": 0x02, "group_obj": 0x04, "group": 0x08, "mask": 0x10, "other": 0x20}
ACL_UNDEFINED_ID = 0xFFFFFFFF
ACL_ENTRY = struct.Struct("<HHI")  # tag, perm, id


def acl_from_text(text: str, where: str) -> bytes:
    """The short text form (getfacl -c, tar's SCHILY.acl.*): `user::rw-,user:1000:r--,group::r-x,
    mask::r-x,other::r--`. Star appends the numeric id as a fourth field (`user:alice:r--:1000`);
    a name without a numeric id is refused rather than looked up on this host."""
    entries = []
    for raw in re.split(r"[,\n]", text):
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) not in (3, 4):
            raise InputError(f"ACL entry {item!r} is not tag:qualifier:perms", where=where)
        tag, qual, perms = parts[0].lower(), parts[1], parts[2]
        tag = {"u": "user", "g": "group", "m": "mask", "o": "other"}.get(tag, tag)
        if not re.fullmatch(r"[r-][w-][x-]", perms):
            raise InputError(f"ACL entry {item!r}: permissions are like rwx or r-x", where=where)
        perm = (4 if perms[0] == "r" else 0) | (2 if perms[1] == "w" else 0) | (1 if perms[2] == "x" else 0)
        if tag in ("mask", "other") or qual == "":
            if tag in ("user", "group"):
                tag += "_obj"
            if tag not in ACL_TAGS:
                raise InputError(f"ACL entry {item!r}: unknown tag", where=where)
            entries.append((ACL_TAGS[tag], perm, ACL_UNDEFINED_ID))
            continue
        if tag not in ("user", "group"):
            raise InputError(f"ACL entry {item!r}: unknown tag", where=where)
        ident = parts[3] if len(parts) == 4 else qual
        if not ident.isdigit():
            raise InputError(f"ACL entry {item!r} names {tag} {qual!r} without a numeric id "
                             "(this host's user database is not consulted)", where=where)
        entries.append((ACL_TAGS[tag], perm, int(ident)))
    tags = [t for t, _, _ in entries]
    for need in ("user_obj", "group_obj", "other"):
        if tags.count(ACL_TAGS[need]) != 1:
            raise InputError(f"an ACL needs exactly one {need.replace('_obj', '')}:: entry", where=where)
    if (ACL_TAGS["user"] in tags or ACL_TAGS["group"] in tags) and ACL_TAGS["mask"] not in tags:
        raise InputError("an ACL with named users or groups needs a mask:: entry", where=where)
    if len(set((t, i) for t, _, i in entries)) != len(entries):
        raise InputError("an ACL names the same entry twice", where=where)
    entries.sort(key=lambda e: (e[0], e[2]))
    return struct.pack("<I", ACL_VERSION) + b"".join(ACL_ENTRY.pack(*e) for e in entries)


# -- SELinux file_contexts (libselinux label_file) ------------------------------------------

FC_TYPES = {"--": Kind.FILE, "-d": Kind.DIR, "-l": Kind.SYMLINK, "-c": Kind.CHR, "-b": Kind.BLK,
            "-p": Kind.FIFO, "-s": Kind.SOCK}
_META = re.compile(r"[.^$?*+|\[({]")


@dataclass(frozen=True)
class FcSpec:
    regex: re.Pattern
    kind: Kind | None
    context: str | None  # None: <<none>>
    exact: bool  # the regex has no meta characters: libselinux tries these first


def load_file_contexts(path: str) -> list[FcSpec]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(getattr(e, "strerror", None) or str(e), where=path) from None
    specs = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        if len(fields) == 2:
            regex, kind, ctx = fields[0], None, fields[1]
        elif len(fields) == 3 and fields[1] in FC_TYPES:
            regex, kind, ctx = fields[0], FC_TYPES[fields[1]], fields[2]
        else:
            raise InputError("expected `REGEX [--|-d|-l|-c|-b|-p|-s] CONTEXT`", where=f"{path}:{n}")
        try:
            rx = re.compile(f"^(?:{regex})$", re.DOTALL)
        except re.error as e:
            raise InputError(f"bad regular expression {regex!r}: {e}", where=f"{path}:{n}") from None
        specs.append(FcSpec(rx, kind, None if ctx == "<<none>>" else ctx, not _META.search(regex)))
    # libselinux sorts exact paths after the regexes and then takes the last match
    return [s for s in specs if not s.exact] + [s for s in specs if s.exact]


def selinux_context(specs: list[FcSpec], path: str, kind: Kind) -> str | None:
    for s in reversed(specs):
        if (s.kind is None or s.kind is kind) and s.regex.match(path):
            return s.context
    return None


def apply_file_contexts(tree: Tree, path: str) -> None:
    """Label every entry (security.selinux, NUL-terminated as setfiles writes it)."""
    specs = load_file_contexts(path)
    for p, node in tree.walk():
        ctx = selinux_context(specs, p, node.kind)
        if ctx is not None:
            node.set_xattr("security.selinux", ctx.encode() + b"\0")


# -- Android fs_config (canned_fs_config, as e2fsdroid -C reads it) -------------------------


def apply_fs_config(tree: Tree, path: str) -> None:
    """`path uid gid mode [capabilities=MASK]` per line; paths relative to the image root."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(getattr(e, "strerror", None) or str(e), where=path) from None
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{n}"
        if len(fields) < 4:
            raise InputError("expected `path uid gid mode [capabilities=MASK]`", where=where)
        try:
            uid, gid, mode = int(fields[1]), int(fields[2]), int(fields[3], 8)
        except ValueError:
            raise InputError("uid and gid are numbers, mode is octal", where=where) from None
        caps = None
        for extra in fields[4:]:
            key, _, val = extra.partition("=")
            if key != "capabilities":
                raise InputError(f"unknown field {extra!r} (only capabilities=MASK)", where=where)
            try:
                caps = int(val, 0)
            except ValueError:
                raise InputError(f"capabilities={val!r} is not a number", where=where) from None
        target = "/" + "/".join(split_path(fields[0], where))
        node = tree.lookup(target)
        if node is None:
            raise InputError(f"no such path in the tree: {target}", where=where)
        node.uid, node.gid, node.mode = uid, gid, mode & 0o7777
        if caps:  # Android sets the effective bit with the permitted mask
            node.set_xattr("security.capability", encode_capabilities(CapSet(permitted=caps, effective=caps)))
        elif caps == 0:
            node.drop_xattr("security.capability")
