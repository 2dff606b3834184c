"""What client_main() does to local logging, and nothing more."""

import logging

import pytest

from snailjob.log import configure_local_logging


@pytest.fixture
def clean_logging():
    package = logging.getLogger("snailjob")
    root = logging.getLogger()
    saved = (package.level, list(package.handlers), list(root.handlers))
    root.handlers = []
    yield package
    for handler in package.handlers:
        if handler not in saved[1]:
            handler.close()
    package.setLevel(saved[0])
    package.handlers = saved[1]
    root.handlers = saved[2]


def test_console_handler_only_when_nothing_is_configured(clean_logging):
    logging.getLogger().handlers = []  # pytest adds its own during the test body
    added = configure_local_logging("WARNING", "%(message)s", None, 3)
    assert [type(h).__name__ for h in added] == ["StreamHandler"]
    for handler in added:
        clean_logging.removeHandler(handler)
    logging.getLogger().addHandler(logging.NullHandler())  # the program configured logging
    assert configure_local_logging("INFO", "%(message)s", None, 3) == []


def test_file_handler_with_the_013_settings(clean_logging, tmp_path):
    target = tmp_path / "log" / "snailjob.log"
    logging.getLogger().addHandler(logging.NullHandler())
    added = configure_local_logging("INFO", "%(levelname)s|%(message)s", str(target), 5)
    assert [type(h).__name__ for h in added] == ["TimedRotatingFileHandler"]
    assert added[0].backupCount == 5
    logging.getLogger("snailjob.local").info("to the file %d", 1)
    added[0].flush()
    assert "INFO|to the file 1" in target.read_text()


def test_level_applies_only_when_unset(clean_logging):
    logging.getLogger().addHandler(logging.NullHandler())
    clean_logging.setLevel(logging.ERROR)
    configure_local_logging("DEBUG", "%(message)s", None, 1)
    assert clean_logging.level == logging.ERROR
    clean_logging.setLevel(logging.NOTSET)
    configure_local_logging("DEBUG", "%(message)s", None, 1)
    assert clean_logging.level == logging.DEBUG
