"""scripts/mutants.py without running a mutant: every mutant's snippet is
found exactly once in the package, differs from its replacement and names
existing tests.  A failure here after moving code means a snippet changed:
update it in the script (the test names stay valid)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mutants.py"


@pytest.fixture(scope="module")
def mutants() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_snippet_is_found_exactly_once_and_names_its_tests(mutants: ModuleType) -> None:
    assert mutants.MUTANTS
    problems = mutants.self_check()
    assert problems == [], "\n".join(problems)


def test_a_missing_or_repeated_snippet_is_an_error_naming_the_mutant(mutants: ModuleType, tmp_path: Any) -> None:
    package = tmp_path / "snailjob"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\ny = 2\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    once = mutants.Mutant("once", "", "x = 1", "x = 2", ("tests/t.py::t",))
    assert mutants.locate(once, tmp_path) == package / "a.py"
    with pytest.raises(mutants.SnippetError, match="mutant gone: snippet not found"):
        mutants.locate(mutants.Mutant("gone", "", "z = 3", "z = 4", ()), tmp_path)
    with pytest.raises(mutants.SnippetError, match=r"mutant twice: snippet found 2 times \(.*a\.py.*b\.py"):
        mutants.locate(mutants.Mutant("twice", "", "y = 2", "y = 3", ()), tmp_path)


def test_list_and_check_options() -> None:
    listed = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "map-parent-id" in listed.stdout
    checked = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "every snippet found once" in checked.stdout, checked.stdout
    unknown = subprocess.run([sys.executable, str(SCRIPT), "no-such-mutant"], capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 2 and "no mutant named no-such-mutant" in unknown.stderr
