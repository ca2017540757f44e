"""fstool.fs.crc32c: the crc32c extension loaded without the package's slow __init__."""
import subprocess
import sys

from conftest import REPO


def test_check_value_and_no_package_import():
    code = ("import sys; from fstool.fs.crc32c import crc32c; "
            "print(hex(crc32c(b'123456789')), hex(crc32c(b'56789', crc32c(b'1234'))), "
            "'crc32c' in sys.modules, 'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == ["0xe3069283", "0xe3069283", "False", "False"]
