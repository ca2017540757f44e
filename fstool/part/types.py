"""Partition type names: GPT type GUIDs and MBR type bytes.

One table maps the names a spec may use to a GPT GUID and an MBR byte. The
GUIDs are those of the UEFI specification and of the Discoverable Partitions
Specification (systemd's docs/DISCOVERABLE_PARTITIONS.md), the same ones
util-linux prints with `sfdisk --label gpt -T`.
"""
from __future__ import annotations

import uuid

from ..errors import SpecError, did_you_mean

# name -> (GPT type GUID or None, MBR byte or None, human name)
_BASE: dict[str, tuple[str | None, int | None, str]] = {
    "empty": ("00000000-0000-0000-0000-000000000000", 0x00, "Empty"),
    "esp": ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 0xEF, "EFI System"),
    "bios-boot": ("21686148-6449-6E6F-744E-656564454649", None, "BIOS boot"),
    "msdata": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", None, "Microsoft basic data"),
    "linux": ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 0x83, "Linux filesystem"),
    "linux-swap": ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", 0x82, "Linux swap"),
    "linux-lvm": ("E6D6D379-F507-44C2-A23C-238F2A3DF928", 0x8E, "Linux LVM"),
    "linux-raid": ("A19D880F-05FC-4D3B-A006-743F0F84911E", 0xFD, "Linux RAID"),
    "linux-home": ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", 0x83, "Linux home"),
    "linux-srv": ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", 0x83, "Linux server data"),
    "linux-var": ("4D21B016-B534-45C2-A9FB-5C16E091FD2D", 0x83, "Linux variable data"),
    "linux-tmp": ("7EC6F557-3BC5-4ACA-B293-16EF5DF639D1", 0x83, "Linux temporary data"),
    "xbootldr": ("BC13C2FF-59E6-4262-A352-B275FD6F7172", 0xEA, "Linux extended boot"),
    "fat12": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x01, "Microsoft basic data"),
    "fat16": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x0E, "Microsoft basic data"),
    "fat32": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x0C, "Microsoft basic data"),
    "exfat": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x07, "Microsoft basic data"),
}

ALIASES = {
    "efi": "esp", "efi-system": "esp", "linux-filesystem": "linux", "swap": "linux-swap",
    "bios": "bios-boot", "microsoft-basic-data": "msdata", "basic-data": "msdata",
    "lvm": "linux-lvm", "raid": "linux-raid",
}

# Discoverable Partitions Specification: arch -> (root, usr, root-verity, usr-verity)
_DPS: dict[str, tuple[str, str, str, str, str]] = {
    "x86": ("44479540-F297-41B2-9AF7-D131D5F0458A", "75250D76-8CC6-458E-BD66-BD47CC81A812",
            "D13C5D3B-B5D1-422A-B29F-9454FDC89D76", "8F461B0D-14EE-4E81-9AA9-049B6FB97ABD", "x86"),
    "x86-64": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "8484680C-9521-48C6-9C11-B0720656F69E",
               "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5", "77FF5F63-E7B6-4633-ACF4-1565B864C0E6", "x86-64"),
    "arm": ("69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "7D0359A3-02B3-4F0A-865C-654403E70625",
            "7386CDF2-203C-47A9-A498-F2ECCE45A2D6", "C215D751-7BCD-4649-BE90-6627490A4C05", "ARM"),
    "arm64": ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "B0E01050-EE5F-4390-949A-9101B17104E9",
              "DF3300CE-D69F-4C92-978C-9BFB0F38D820", "6E11A4E7-FBCA-4DED-B9E9-E1A512BB664E", "ARM-64"),
    "ia64": ("993D8D3D-F80E-4225-855A-9DAF8ED7EA97", "4301D2A6-4E3B-4B2A-BB94-9E0B2C4225EA",
             "86ED10D5-B607-45BB-8957-D350F23D0571", "6A491E03-3BE7-4545-8E38-83320E0EA880", "IA-64"),
    "loongarch64": ("77055800-792C-4F94-B39A-98C91B762BB6", "E611C702-575C-4CBE-9A46-434FA0BF7E3F",
                    "F3393B22-E9AF-4613-A948-9D3BFBD0C535", "F46B2C26-59AE-48F0-9106-C50ED47F673D",
                    "LoongArch-64"),
    "ppc64le": ("C31C45E6-3F39-412E-80FB-4809C4980599", "15BB03AF-77E7-4D4A-B12B-C0D084F7491C",
                "906BD944-4589-4AAE-A4E4-DD983917446A", "EE2B9983-21E8-4153-86D9-B6901A54D1CE", "PPC64LE"),
    "riscv32": ("60D5A7FE-8E7D-435C-B714-3DD8162144E1", "B933FB22-5C3F-4F91-AF90-E2BB0FA50702",
                "AE0253BE-1167-4007-AC68-43926C14C5DE", "CB1EE4E3-8CD0-4136-A0A4-AA61A32E8730", "RISC-V-32"),
    "riscv64": ("72EC70A6-CF74-40E6-BD49-4BDA08E8F224", "BEAEC34B-8442-439B-A40B-984381ED097D",
                "B6ED5582-440B-4209-B8DA-5FF7C419EA3D", "8F1056BE-9B05-47C4-81D6-BE53128E5B54", "RISC-V-64"),
    "s390x": ("5EEAD9A9-FE09-4A1E-A1D7-520D00531306", "8A4F5770-50AA-4ED3-874A-99B710DB6FEA",
              "B325BFBE-C7BE-4AB8-8357-139E652D2F6B", "31741CC4-1A2A-4111-A581-E00B447D2D06", "S390X"),
}
ARCH_ALIASES = {"amd64": "x86-64", "x86_64": "x86-64", "aarch64": "arm64", "i386": "x86", "i686": "x86",
                "riscv-64": "riscv64", "risc-v-64": "riscv64"}

TYPES = dict(_BASE)
for _arch, (_root, _usr, _rootv, _usrv, _label) in _DPS.items():
    TYPES[f"linux-root-{_arch}"] = (_root, 0x83, f"Linux root ({_label})")
    TYPES[f"linux-usr-{_arch}"] = (_usr, 0x83, f"Linux /usr ({_label})")
    TYPES[f"linux-root-verity-{_arch}"] = (_rootv, None, f"Linux root verity ({_label})")
    TYPES[f"linux-usr-verity-{_arch}"] = (_usrv, None, f"Linux /usr verity ({_label})")

_GUID_NAMES: dict[uuid.UUID, str] = {}
for _n, (_g, _b, _h) in TYPES.items():
    if _g is not None:
        _GUID_NAMES.setdefault(uuid.UUID(_g), _h)

MBR_NAMES = {
    0x00: "Empty", 0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT", 0x0B: "W95 FAT32", 0x0C: "W95 FAT32 (LBA)", 0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)", 0x82: "Linux swap", 0x83: "Linux", 0x8E: "Linux LVM",
    0xEA: "Linux extended boot", 0xEE: "GPT", 0xEF: "EFI (FAT-12/16/32)", 0xFD: "Linux raid autodetect",
}


def canonical_name(name: str) -> str:
    n = name.strip().lower().replace("_", "-")
    n = ALIASES.get(n, n)
    for prefix in ("linux-root-verity-", "linux-usr-verity-", "linux-root-", "linux-usr-"):
        if n.startswith(prefix):
            arch = n[len(prefix):]
            return prefix + ARCH_ALIASES.get(arch, arch)
    return n


def _fat_byte(size: int | None) -> int:
    # A FAT partition of under 32 MiB is FAT12/16 by the FAT spec's cluster-count rules; larger
    # ones get the LBA FAT32 byte, which every Linux and Windows reads.
    if size is not None and size < 32 << 20:
        return 0x0E
    return 0x0C


def resolve_type(name: str, table: str, where: str, size: int | None = None):
    """A spec's type string -> uuid.UUID (GPT) or int (MBR); SpecError naming `where` if unknown."""
    raw = name.strip()
    if table == "gpt":
        if raw.lower().startswith("0x"):
            raise SpecError(f"{raw!r} is an MBR type byte; a GPT partition needs a type name or "
                            f"GUID (e.g. \"linux\")", where=where)
        try:
            return uuid.UUID(raw)
        except ValueError:
            pass
    else:
        if raw.lower().startswith("0x"):
            try:
                b = int(raw, 16)
            except ValueError:
                b = -1
            if not 0 <= b <= 0xFF or b in (0x05, 0x0F, 0x85):
                raise SpecError(f"{raw!r} is not a usable MBR type byte (0x01-0xff, not an extended "
                                f"container)", where=where)
            return b
        try:
            uuid.UUID(raw)
            raise SpecError(f"{raw!r} is a GPT type GUID; an MBR partition needs a type name or "
                            f"byte (e.g. \"0x83\")", where=where)
        except ValueError:
            pass
    n = canonical_name(raw)
    if n not in TYPES and n not in ("fat", "vfat"):
        hint = did_you_mean(n, list(TYPES) + list(ALIASES))
        raise SpecError(f"unknown partition type {raw!r}{hint}", where=where)
    if table == "gpt":
        if n in ("fat", "vfat"):
            n = "msdata"
        return uuid.UUID(TYPES[n][0])
    if n in ("fat", "vfat", "msdata"):
        return _fat_byte(size)
    b = TYPES[n][1]
    if b is None:
        raise SpecError(f"partition type {raw!r} exists only on GPT disks", where=where)
    return b


def type_name(type_id) -> str:
    if isinstance(type_id, uuid.UUID):
        return _GUID_NAMES.get(type_id, str(type_id).upper())
    return MBR_NAMES.get(type_id, f"0x{type_id:02x}")
