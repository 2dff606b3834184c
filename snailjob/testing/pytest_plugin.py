"""pytest plugin: the ``snailjob_emulator`` fixture.

Registered through the ``pytest11`` entry point ``snailjob``.  Importing this
module has no side effects: the emulator (and gRPC) are imported only when
the fixture is used.

Options for one test come from the ``snailjob_emulator`` marker, whose
keyword arguments go to ``ServerEmulator``::

    @pytest.mark.snailjob_emulator(node_expiry=5.0, register_delay=0.5)
    def test_something(snailjob_emulator):
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from snailjob.testing.emulator import ServerEmulator


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        "snailjob_emulator(**kwargs): keyword arguments for the snailjob_emulator fixture's ServerEmulator",
    )


@pytest.fixture
def snailjob_emulator(request: pytest.FixtureRequest) -> Iterator[ServerEmulator]:
    """A started ``snailjob.testing.ServerEmulator``, stopped after the test.

    Point a client at it with ``snailjob_emulator.client_env()``.
    """
    from snailjob.testing.emulator import ServerEmulator

    kwargs: Dict[str, Any] = {}
    marker = request.node.get_closest_marker("snailjob_emulator")
    if marker is not None:
        kwargs.update(marker.kwargs)
    emulator = ServerEmulator(**kwargs)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
