"""Documentation that cannot go stale: every python block of README.md and docs/*.md
runs, in order, as written.

Sybil (a maintained documentation-testing tool) finds the fenced ``python`` blocks and
the skip markers. Each page runs in a fresh interpreter in a temporary folder, as a
reader's session would: its blocks in page order, in one namespace, with JAX's
defaults (float32), and the files they write (``big.npy``, ``mlflow.db``) landing in
that folder. One test per block reports what that block did.

A block that cannot run here (a signature list, one process of several, a cluster)
is marked on the page, in an HTML comment the reader does not see, with the reason::

    <!-- skip: next "one process of several: the recipe below starts two" -->

Blocks in other languages (``bash``, ``yaml``) are not run, except docs/distributed.md's
two-process recipe, which ``test_distributed_recipe`` runs as the page says.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")))

# Runs in the fresh interpreter: evaluates a page's examples in order and writes, per
# python block, its line, outcome and message as JSON.
DRIVER = r"""
import json, sys, time, traceback
from pathlib import Path
from unittest import SkipTest

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

page, out = sys.argv[1], sys.argv[2]
skip = SkipParser()
document = Sybil(parsers=[PythonCodeBlockParser(), skip]).parse(Path(page))
results = []
for example in document.examples():
    start = time.perf_counter()
    try:
        example.evaluate()
        outcome, message = "passed", ""
    except SkipTest as e:
        outcome, message = "skipped", str(e)
    except BaseException as e:  # noqa: BLE001 - every failure is reported, then the page goes on
        outcome, message = "failed", "".join(traceback.format_exception(e))
    if example.region.evaluator is skip.skipper:
        if outcome == "failed":  # a malformed marker
            results.append({"line": example.line, "outcome": outcome, "message": message})
        continue
    results.append({"line": example.line, "outcome": outcome, "message": message,
                    "seconds": round(time.perf_counter() - start, 2)})
Path(out).write_text(json.dumps(results))
"""


def python_blocks(page: str) -> list[int]:
    """The first line of every python block of ``page`` (parsed here, not run)."""
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser

    document = Sybil(parsers=[PythonCodeBlockParser()]).parse(ROOT / page)
    return [example.line for example in document.examples()]


def reader_env() -> dict:
    """This environment less the test suite's JAX settings a reader would not have
    (the cheap-compile XLA flags stay: they change speed, not numbers)."""
    env = dict(os.environ)
    for name in ("JAX_ENABLE_X64", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


_runs: dict[str, dict[int, dict] | str] = {}


def run_page(page: str, tmp_path_factory) -> dict[int, dict]:
    """Run every block of ``page`` once (cached for its tests, a failure too):
    line -> result."""
    if page not in _runs:
        folder = tmp_path_factory.mktemp(Path(page).stem)
        out = folder / "results.json"
        try:
            proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / page), str(out)],
                                  cwd=folder, env=reader_env(), capture_output=True,
                                  text=True, timeout=600)
            _runs[page] = (f"{page}: the driver failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            if proc.returncode == 0 and out.exists():
                _runs[page] = {r["line"]: r for r in json.loads(out.read_text())}
        except subprocess.TimeoutExpired:
            _runs[page] = f"{page}: its blocks did not finish in 600 s"
    if isinstance(_runs[page], str):
        pytest.fail(_runs[page])
    return _runs[page]


BLOCKS = [(page, line) for page in PAGES for line in python_blocks(page)]


@pytest.mark.parametrize("page,line", BLOCKS, ids=[f"{p}:{n}" for p, n in BLOCKS])
def test_block(page, line, tmp_path_factory):
    result = run_page(page, tmp_path_factory).get(line)
    assert result is not None, f"{page}:{line} was not evaluated"
    if result["outcome"] == "skipped":
        pytest.skip(f"{page}:{line}: {result['message']}")
    assert result["outcome"] == "passed", f"{page}:{line} failed:\n{result['message']}"


@pytest.mark.parametrize("page", PAGES)
def test_every_python_fence_is_collected(page):
    """Sybil sees every ```python fence of the page (none hides from the tests)."""
    import re

    fences = re.findall(r"^\s*```python\b", (ROOT / page).read_text(), flags=re.MULTILINE)
    assert len(python_blocks(page)) == len(fences)


def fenced(page: str, language: str, containing: str) -> str:
    """The one ``language`` block of ``page`` that contains ``containing``."""
    from sybil import Sybil
    from sybil.parsers.markdown import CodeBlockParser

    document = Sybil(parsers=[CodeBlockParser(language)]).parse(ROOT / page)
    found = [str(e.parsed) for e in document.examples() if containing in str(e.parsed)]
    assert len(found) == 1, f"{page}: {len(found)} {language} blocks contain {containing!r}"
    return found[0]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_recipe(tmp_path):
    """docs/distributed.md's script, saved as ``fit_sharded.py``, started by its bash
    recipe as written (two processes, the coordinator on 127.0.0.1; only the port is
    a free one instead of 12345, through the script's ``COORDINATOR``)."""
    (tmp_path / "fit_sharded.py").write_text(
        fenced("docs/distributed.md", "python", "jax.distributed.initialize"))
    recipe = fenced("docs/distributed.md", "bash", "RANK=0")
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the recipe's .venv/bin/python
    env = reader_env()
    env["COORDINATOR"] = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(["bash", "-ec", recipe], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"the recipe did not finish in 180 s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    assert "2 processes, 10000 rows:" in out, out[-3000:]
