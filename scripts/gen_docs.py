"""Pages of the documentation site that come from files at the repository's root.

``python scripts/gen_docs.py`` writes ``docs/configuration.md`` (from
CONFIGURATION.md), ``docs/benchmarks.md`` (BENCHMARKS.md) and
``docs/changelog.md`` (CHANGELOG.md), with the links rewritten for ``docs/``.
``--check`` writes nothing and exits 1 when a page is out of date (the test
suite runs it), so the site and the root files cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"CONFIGURATION.md": "configuration.md", "BENCHMARKS.md": "benchmarks.md", "CHANGELOG.md": "changelog.md"}
_LINK = re.compile(r"\[([^\]]*)\]\((?!https?://|#)([^)#\s]+)(#[^)]*)?\)")


def _rewrite(match: re.Match) -> str:
    text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
    if target.startswith("docs/"):
        return f"[{text}]({target[len('docs/'):]}{anchor})"
    if target in PAGES:
        return f"[{text}]({PAGES[target]}{anchor})"
    return f"{text} (`{target}` in the repository)"  # not part of the site


def page_for(source: str) -> str:
    text = (ROOT / source).read_text(encoding="utf-8")
    note = f"<!-- generated from {source} by scripts/gen_docs.py: edit {source}, not this file -->\n"
    return note + _LINK.sub(_rewrite, text)


def main(argv: list) -> int:
    stale = []
    for source, page in PAGES.items():
        wanted = page_for(source)
        path = ROOT / "docs" / page
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != wanted:
                stale.append(f"docs/{page}")
        else:
            path.write_text(wanted, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
