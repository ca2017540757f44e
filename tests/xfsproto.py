"""Write an mkfs.xfs prototype file (`mkfs.xfs -p FILE`) describing a host directory.

mkfs.xfs 6.1 cannot take a directory, only this format (xfsprogs mkfs/proto.c): a
boot-image line, a "blocks inodes" line, then the root as `d--755 uid gid` followed by
one line per entry (`name mode uid gid [host path | target | major minor]`), each
directory's entries closed by `$`. Names are whitespace-separated tokens, so entries
whose names hold whitespace or ':' cannot be described, nor sockets, sticky bits or
hardlinks (every name becomes its own inode); `skipped` lists what was left out.
"""
from __future__ import annotations

import os
import stat


def _mode(st: os.stat_result) -> str:
    m = st.st_mode
    kind = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFCHR: "c",
            stat.S_IFBLK: "b", stat.S_IFIFO: "p"}[stat.S_IFMT(m)]
    return (kind + ("u" if m & stat.S_ISUID else "-") + ("g" if m & stat.S_ISGID else "-")
            + f"{m & 0o777:03o}")


def write_protofile(src: str, dest: str) -> list[str]:
    skipped: list[str] = []
    lines = ["/dev/null", "0 0"]
    st = os.lstat(src)
    lines.append(f"{_mode(st)} {st.st_uid} {st.st_gid}")

    def walk(d: str, depth: int) -> None:
        for name in sorted(os.listdir(d), key=os.fsencode):
            p = os.path.join(d, name)
            st = os.lstat(p)
            fmt = stat.S_IFMT(st.st_mode)
            if any(c.isspace() for c in name) or ":" in name or fmt == stat.S_IFSOCK \
                    or st.st_mode & stat.S_ISVTX:
                skipped.append(p)
                continue
            pad = " " * depth
            head = f"{pad}{name} {_mode(st)} {st.st_uid} {st.st_gid}"
            if fmt == stat.S_IFREG:
                lines.append(f"{head} {p}")
            elif fmt == stat.S_IFLNK:
                target = os.readlink(p)
                if any(c.isspace() for c in target) or ":" in target:
                    skipped.append(p)
                    continue
                lines.append(f"{head} {target}")
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                lines.append(f"{head} {os.major(st.st_rdev)} {os.minor(st.st_rdev)}")
            elif fmt == stat.S_IFIFO:
                lines.append(head)
            else:
                lines.append(head)
                walk(p, depth + 1)
                lines.append(pad + " $")

    walk(src, 1)
    lines.append("$")
    with open(dest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return skipped
