"""The documentation keeps up with the code: generated pages are current,
settings are all documented with their real defaults, every Python snippet of
the site comes from a file the tests run, and the Chinese pages are in step
with the English ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List, Set, Tuple

import pytest

from snailjob.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```")
COMMENT = re.compile(r"(?:^|\s+)#(?:\s.*)?$")  # a shell or Python comment: translated in the Chinese twins
PAIRS = [("README.md", "README.zh-CN.md"), ("docs/getting-started.md", "docs/zh/getting-started.md"),
         ("CONFIGURATION.md", "docs/zh/configuration.md"),
         ("docs/builtin-executors.md", "docs/zh/builtin-executors.md"),
         ("docs/from-java.md", "docs/zh/from-java.md"), ("docs/alarms.md", "docs/zh/alarms.md"),
         ("docs/guides/retry-across-services.md", "docs/zh/retry-across-services.md")]


def without_comments(block: str) -> str:
    """A code block's code: comments (``# ...`` after whitespace or at the start of a line) and
    the lines left empty by removing them dropped; commands, code and output stay as written."""
    lines = [COMMENT.sub("", line).rstrip() for line in block.splitlines()]
    return "\n".join(line for line in lines if line)


def structure(path: Path) -> Tuple[List[int], List[str], Set[str]]:
    """Heading levels in order, fenced code blocks (without comments, which are translated),
    SNAIL_* names of a Markdown file."""
    levels: List[int] = []
    blocks: List[str] = []
    current: List[str] = []
    inside = False
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines():
        if FENCE.match(line):
            if inside:
                blocks.append(without_comments("\n".join(current)))
                current = []
            inside = not inside
            continue
        if inside:
            current.append(line)
        elif line.startswith("#"):
            levels.append(len(line) - len(line.lstrip("#")))
    return levels, blocks, set(re.findall(r"SNAIL_[A-Z0-9_]+", text))


def test_pages_generated_from_root_files_are_current() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_setting_is_documented_with_its_default() -> None:
    text = (ROOT / "CONFIGURATION.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2)
            for m in re.finditer(r"^\| `(SNAIL_[A-Z0-9_]+)` \| ((?:[^|\\]|\\.)*) \|", text, re.M)}
    missing = [f"SNAIL_{name.upper()[6:]}" for name in Settings.model_fields if name.upper() not in rows]
    assert not missing, f"settings without a row in CONFIGURATION.md: {missing}"
    unknown = [name for name in rows if name.lower() not in Settings.model_fields]
    assert not unknown, f"rows for settings that do not exist: {unknown}"
    wrong = []
    for name, field in Settings.model_fields.items():
        cell = rows[name.upper()].strip()
        default = field.default
        if default is None:
            if not cell.startswith("unset"):
                wrong.append((name, cell, default))
            continue
        literal = re.match(r"`([^`]*)`", cell)
        if literal is None or name == "snail_token":
            continue  # described in words
        value = literal.group(1).replace("\\|", "|")
        if isinstance(default, bool):
            same = value == str(default).lower()  # as the variable is written: true / false
        elif not isinstance(default, (int, float)):
            same = value == str(default)
        else:
            try:
                same = float(value.replace(",", "")) == float(default)
            except ValueError:
                same = False
        if not same:
            wrong.append((name, value, default))
    assert not wrong, f"CONFIGURATION.md defaults differ from the settings model: {wrong}"


def test_every_python_snippet_of_the_site_comes_from_a_tested_file() -> None:
    pages = sorted((ROOT / "docs").rglob("*.md"))
    offenders = []
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        inside, language, block = False, "", []
        for line in lines:
            if FENCE.match(line):
                if inside and language == "python":
                    code = [ln for ln in block if ln.strip()]
                    if not code or not all(ln.startswith("--8<-- ") for ln in code):
                        offenders.append(f"{page.relative_to(ROOT)}: {block[:2]}")
                    for ln in code:
                        target = ln.split('"')[1].split(":")[0] if '"' in ln else ""
                        if not (target.startswith(("example/", "tests/")) and (ROOT / target).is_file()):
                            offenders.append(f"{page.relative_to(ROOT)}: includes {target!r}, not a tested file")
                inside = not inside
                language = line[3:].strip() if inside else ""
                block = []
                continue
            if inside:
                block.append(line)
    assert not offenders, offenders


@pytest.mark.parametrize("english,chinese", PAIRS)
def test_chinese_pages_are_in_step(english: str, chinese: str) -> None:
    en, zh = ROOT / english, ROOT / chinese
    assert zh.is_file(), f"{chinese} is missing"
    en_levels, en_blocks, en_settings = structure(en)
    zh_levels, zh_blocks, zh_settings = structure(zh)
    assert zh_levels == en_levels, f"{chinese} has other sections than {english}"
    assert zh_blocks == en_blocks, f"{chinese}'s code blocks differ from {english}'s"
    assert zh_settings == en_settings, f"settings only in one: {sorted(en_settings ^ zh_settings)}"
    assert "zh" in en.read_text(encoding="utf-8").split("\n\n", 2)[1], f"{english} does not link its translation"


def test_the_code_comparison_ignores_only_comments() -> None:
    assert without_comments("make test       # runs ruff\n# a note\nprint('#1') # x") == "make test\nprint('#1')"
    assert without_comments("a = 1  # one") != without_comments("a = 2  # one")


def test_chinese_readme_comments_are_translated() -> None:
    """Every comment in the Chinese README's code blocks is in Chinese (or is only code or a URL)."""
    text = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
    english = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            match = COMMENT.search(line)
            comment = match.group(0).strip() if match else ""
            if re.search(r"[A-Za-z]{3,} [a-z]{3,}", comment) and not re.search(r"[\u4e00-\u9fff]", comment):
                english.append(comment)
    assert not english, english


@pytest.mark.parametrize("page", ["README.md", "README.zh-CN.md", "docs/getting-started.md",
                                  "docs/zh/getting-started.md"])
def test_the_first_install_line_installs_this_client(page: str) -> None:
    """0.2.0 is not on PyPI: the first `pip install` of a page installs the checkout (or its wheel),
    and a bare `pip install snail-job-python` (which gives 0.1.3) appears nowhere as a command."""
    text = (ROOT / page).read_text(encoding="utf-8")
    _, blocks, _ = structure(ROOT / page)
    installs = [line for block in blocks for line in block.splitlines() if "pip install" in line]
    assert installs, f"{page} has no install command"
    first = installs[0].split("pip install", 1)[1].split()
    assert first[0] in (".", "-e") and (first[0] == "." or first[1] == "."), installs[0]
    assert not re.search(r"pip install snail-job-python(?![\w\[\"'>=])", text.replace("`pip install "
                                                                                  "snail-job-python` ", "")), page
    assert 'pip install "snail-job-python>=0.2"' in text, f"{page} does not give the command for once 0.2.0 is out"


def _fenced_doctest_lines_ok(text: str) -> List[str]:
    """The ``>>>`` lines of Markdown ``text`` that are outside a code fence."""
    outside, inside = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif line.strip().startswith(">>>") and not inside:
            outside.append(line)
    return outside


def test_fence_doctests_wraps_examples_up_to_the_blank_line() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from griffe_doctest import fence_doctests
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    text = "Intro.\n\n>>> a = 1\n... b = 2\nout\n\nAfter.\n\n```python\n>>> kept\n```\n    >>> nested"
    assert fence_doctests(text) == ("Intro.\n\n```pycon\n>>> a = 1\n... b = 2\nout\n```\n\nAfter.\n\n"
                                    "```python\n>>> kept\n```\n    ```pycon\n    >>> nested\n    ```")


def test_every_doctest_example_of_the_api_reference_renders_as_code() -> None:
    """mkdocs.yml runs scripts/griffe_doctest.py on the docstrings, and after it no ``>>>`` line
    of any public docstring is outside a code fence (Markdown would render it as nested quotes)."""
    import importlib
    import inspect
    import pkgutil

    import snailjob

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from griffe_doctest import fence_doctests
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert 'extensions: ["scripts/griffe_doctest.py:DoctestFences"]' in config
    docstrings = {}
    for info in pkgutil.walk_packages(snailjob.__path__, "snailjob."):
        if "._" in info.name or ".wire." in info.name or ".contrib." in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in [(info.name, module), *vars(module).items()]:
            if getattr(obj, "__module__", info.name) != info.name or str(name).startswith("_"):
                continue
            members = [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]
            for member in members:
                doc = inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
                if doc and ">>>" in doc:
                    docstrings[getattr(member, "__qualname__", name)] = doc
    assert {"MapExecutor", "Client"} <= set(docstrings), sorted(docstrings)
    unfenced = {name: _fenced_doctest_lines_ok(fence_doctests(doc)) for name, doc in docstrings.items()}
    assert not any(unfenced.values()), unfenced
    assert all(_fenced_doctest_lines_ok(doc) for doc in docstrings.values())  # the raw form would quote
