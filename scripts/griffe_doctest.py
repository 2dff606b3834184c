"""A griffe extension for the API reference (mkdocs.yml, mkdocstrings' ``extensions``):
doctest examples in docstrings (``>>>`` lines, their ``...`` continuations and their
output, up to the next blank line) are wrapped in a ``pycon`` code fence, so that the
site shows them as code rather than as Markdown's nested quotes run together on one line.

The docstrings stay plain doctest text (``help()`` and IDEs show them as written).
``fence_doctests`` is the whole transformation; tests/test_docs.py checks it on every
public docstring.
"""

from __future__ import annotations

from typing import Any, List

try:
    from griffe import Extension
except ImportError:  # the test suite uses fence_doctests without the docs tools
    Extension = object  # type: ignore[assignment,misc]

FENCE = "```"


def fence_doctests(text: str) -> str:
    """``text`` with each doctest block (from a ``>>>`` line to the next blank line) in a
    ``pycon`` fence, indented as the block is; blocks already inside a fence are left alone."""
    out: List[str] = []
    in_fence = False
    in_example = False
    indent = ""
    for line in text.splitlines():
        stripped = line.strip()
        if in_example and not stripped:
            out.append(indent + FENCE)
            in_example = False
        if not in_example and stripped.startswith(FENCE):
            in_fence = not in_fence
        elif not in_fence and not in_example and stripped.startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + FENCE + "pycon")
            in_example = True
        out.append(line)
    if in_example:
        out.append(indent + FENCE)
    return "\n".join(out)


class DoctestFences(Extension):  # type: ignore[misc,valid-type]
    """Fences the doctest examples of every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
