"""Is the package ready to publish?  Build it, check it, install it, run it.

``.venv/bin/python scripts/check_package.py`` (needs ``pip install build twine uv``;
``.ci/run`` runs it):

1. builds the sdist and the wheel into a scratch directory (``python -m build``);
2. ``twine check``: the metadata and the README render as PyPI will show them;
3. the contents: the wheel holds the package only (no tests, no caches, no
   bytecode), with ``py.typed``, the ``.proto`` and the ``.pyi`` stubs, the
   Django management command and the ``snailjob`` console script; the sdist
   carries no caches, virtual environments or local files;
4. installs the wheel (with the ``examples`` extra) into a fresh virtual
   environment and runs ``example/run_examples.py`` with it, from outside the
   checkout's import path, so the code that runs is the wheel's;
5. once more the way the original README tells users to run a program:
   ``uv run --no-project --with <wheel> python ...``.

Exits non-zero, naming the problem, at the first check that fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL_MUST_HAVE = ["snailjob/py.typed", "snailjob/wire/snailjob.proto", "snailjob/wire/snailjob_pb2.pyi",
                   "snailjob/contrib/django/management/commands/snailjob_worker.py",
                   "snailjob/testing/pytest_plugin.py"]
SDIST_MUST_NOT = ("__pycache__", ".pyc", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv/",
                  ".hypothesis", "/.env", "db.sqlite3")


def step(text: str) -> None:
    print(f"package: {text}", flush=True)


def run(cmd: list, **kw: object) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if out.returncode != 0:
        raise SystemExit(f"package: {' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                         f"{out.stderr[-3000:]}")
    return str(out.stdout)


def check_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    bad = [n for n in names if not (n.startswith("snailjob/") or ".dist-info/" in n)
           or "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    if bad:
        raise SystemExit(f"package: the wheel holds files it should not: {bad[:10]}")
    missing = [n for n in WHEEL_MUST_HAVE if n not in names]
    if missing:
        raise SystemExit(f"package: the wheel lacks {missing}")
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    if "snailjob = snailjob.cli:main" not in text or "snailjob = snailjob.testing.pytest_plugin" not in text:
        raise SystemExit(f"package: entry points incomplete:\n{text}")
    step(f"wheel ok: {len(names)} files, py.typed, stubs, console script and pytest plugin in")


def check_sdist(sdist: Path) -> None:
    names = tarfile.open(sdist).getnames()
    bad = [n for n in names if any(mark in n for mark in SDIST_MUST_NOT)]
    if bad:
        raise SystemExit(f"package: the sdist holds caches or local files: {bad[:10]}")
    step(f"sdist ok: {len(names)} files, no caches")


def main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="snailjob-package-"))
    try:
        started = time.monotonic()
        dist = scratch / "dist"
        run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
        wheel = next(dist.glob("*.whl"))
        sdist = next(dist.glob("*.tar.gz"))
        step(f"built {wheel.name} and {sdist.name}")
        run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)])
        step("twine check passed")
        check_wheel(wheel)
        check_sdist(sdist)

        venv = scratch / "venv"
        run([sys.executable, "-m", "venv", str(venv)])
        python = venv / "bin" / "python"
        run([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[examples]"])
        where = run([str(python), "-c", "import snailjob; print(snailjob.__file__)"], cwd=str(scratch)).strip()
        if not where.startswith(str(venv)):
            raise SystemExit(f"package: snailjob imported from {where}, not from the installed wheel")
        out = run([str(python), str(ROOT / "example" / "run_examples.py")], cwd=str(scratch), timeout=600)
        step(f"examples from the installed wheel: {out.strip().splitlines()[-2]}")
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        out = run([uv, "run", "--no-project", "--quiet", "--with", f"{wheel}[examples]", "python",
                   str(ROOT / "example" / "run_examples.py")], cwd=str(scratch), timeout=600)
        step(f"uv run --with the wheel: {out.strip().splitlines()[-2]}")
        step(f"all checks passed in {time.monotonic() - started:.0f}s")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
