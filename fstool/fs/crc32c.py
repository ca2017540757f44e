"""crc32c (Castagnoli) from the `crc32c` package's C extension, loaded without running the
package's `__init__`: that reads the installed distribution's metadata through
importlib.metadata (email, socket, ...), 13 ms of every ext4 and XFS build's start, for a
version string nothing here reads. Falls back to a plain import when the extension is not
laid out as expected."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os


def _load():
    try:
        spec = importlib.util.find_spec("crc32c")  # finds the package without importing it
        for d in (spec.submodule_search_locations or []) if spec is not None else []:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(d, "_crc32c" + suffix)
                if os.path.isfile(path):
                    loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", path)
                    spec_ = importlib.util.spec_from_loader(loader.name, loader)
                    mod = importlib.util.module_from_spec(spec_)
                    loader.exec_module(mod)
                    return mod.crc32c
    except (ImportError, OSError, AttributeError):
        pass
    import crc32c as package
    return package.crc32c


crc32c = _load()
