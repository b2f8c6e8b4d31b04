"""Start-up of a small comparison in a fresh process: JAX's persistent compilation
cache cold against warm.

Run it directly::

    .venv/bin/python benchmarks/startup.py              # 3 processes per case
    .venv/bin/python benchmarks/startup.py --repeats 1  # a quicker look

Each row is ``experiments/compare.py`` (EM against Adam on Old Faithful, the
``make run`` job, tracking off so the store's cost stays out) started as a new Python
process, as every job of a sweep run by separate processes (joblib, Ray, Slurm) and
every ``make run`` is:

- ``cold``: a fresh, empty cache folder for every process (what every process paid
  before the cache: everything traced, lowered and compiled by XLA);
- ``warm``: the same cache folder, filled by one process beforehand (XLA's
  compilation read back; tracing and lowering still paid).

Printed per case: the wall time of the process (median of the repeats), the compile
seconds the comparison itself reports for its methods (``compile s`` column of the
table ``compare.py`` prints, summed over the methods), and the ratio cold / warm.
The load average is printed at start and end: timings on a busy machine mean little.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A method's row of compare.py's table: method, final, count [budget], E-steps, ms/iter, compile s
ROW = re.compile(r"^(em|adam)\s+-?\d+\.\d+\s+\d+ \w+( \(budget\))?\s+\S+\s+\S+\s+(\d+\.\d+)")


def one_process(cache: Path) -> tuple[float, float]:
    """``(wall seconds, compile seconds reported)`` of one fresh ``compare.py``."""
    args = [sys.executable, str(ROOT / "experiments" / "compare.py"), "tracking.enabled=false",
            f"compilation_cache.dir={cache}"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    compile_seconds = sum(float(m.group(3)) for line in proc.stdout.splitlines()
                          if (m := ROW.match(line)))
    return wall, compile_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cold = [one_process(Path(tmp) / f"cold{i}") for i in range(args.repeats)]
        warm_cache = Path(tmp) / "warm"
        one_process(warm_cache)  # fills it
        warm = [one_process(warm_cache) for _ in range(args.repeats)]
    for name, runs in (("cold", cold), ("warm", warm)):
        rows[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
    print(f"\n{'cache':6s} {'wall s':>8s} {'compile s':>10s}")
    for name, (wall, comp) in rows.items():
        print(f"{name:6s} {wall:8.2f} {comp:10.2f}")
    (cw, cc), (ww, wc) = rows["cold"], rows["warm"]
    print(f"\ncold / warm: wall {cw / ww:.2f}x, compile {cc / max(wc, 1e-9):.1f}x "
          f"({args.repeats} processes each, medians)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
