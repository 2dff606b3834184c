"""The dependency ranges in pyproject.toml admit no release with a known
vulnerability, and still admit what is installed and what the generated
stubs need."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Dict

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def dependencies() -> Dict[str, SpecifierSet]:
    """``name -> specifier`` of ``[project] dependencies`` (read without
    tomllib, which Python 3.9 lacks)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert block, "no [project] dependencies in pyproject.toml"
    found: Dict[str, SpecifierSet] = {}
    for entry in re.findall(r'^\s*"([^"]+)",', block.group(1), re.M):
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(.*)", entry).groups()  # type: ignore[union-attr]
        found[name.lower()] = SpecifierSet(spec)
    return found


def test_grpcio_floor_has_the_rapid_reset_fixes():
    spec = dependencies()["grpcio"]
    for bad in ("1.58.0", "1.59.0", "1.59.1"):  # CVE-2023-44487, fixed in 1.59.2
        assert bad not in spec, bad
    for good in ("1.59.2", "1.62.3", "1.85.3", version("grpcio")):
        assert good in spec, good


def test_protobuf_range_excludes_cve_2025_4565():
    spec = dependencies()["protobuf"]
    vulnerable = ["3.20.3", "4.21.12", "4.25.1", "4.25.7", "5.26.0", "5.27.2", "5.28.3", "5.29.0", "5.29.4",
                  "6.30.0", "6.30.2", "6.31.0"]
    fixed = ["4.25.8", "4.25.9", "5.29.5", "5.29.6", "6.31.1", "6.32.0", "7.36.2", version("protobuf")]
    assert [v for v in vulnerable if v in spec] == []
    assert [v for v in fixed if v not in spec] == []


def test_generated_stubs_fit_the_protobuf_floor():
    """The gencode's protobuf version is not newer than the lowest runtime
    admitted (4.x gencode has no runtime check; 5.26+ gencode would refuse
    older runtimes)."""
    header = (ROOT / "snailjob/wire/snailjob_pb2.py").read_text(encoding="utf-8")
    gencode = re.search(r"^# Protobuf Python Version: (\S+)$", header, re.M)
    assert gencode, "no version header in snailjob_pb2.py"
    assert Version(gencode.group(1)) < Version("5"), gencode.group(1)
    floor = min(Version(s.version) for s in dependencies()["protobuf"] if s.operator == ">=")
    assert Version(gencode.group(1)) <= floor
