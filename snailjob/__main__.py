"""``python -m snailjob``: the ``snailjob`` command (see ``snailjob.cli``)."""

from snailjob.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
