"""Run every benchmark under bench/ (bench_*.py) one after another; each prints its own table.

Benchmarks are not tests: they time fstool against the C tools on the same corpus in the
same run (bench/corpus.py builds it once under bench/out/) and print ratios.
"""
import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
status = 0
for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
    print(f"== {os.path.basename(script)}", flush=True)
    status |= subprocess.call([sys.executable, script] + sys.argv[1:])
sys.exit(status)
