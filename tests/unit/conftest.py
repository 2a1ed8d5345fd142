"""Fixtures the unit tests of the conductor share."""

from __future__ import annotations

import pytest
from support.conductor_parts import Parts


@pytest.fixture
def parts(backend):
    """A conductor's parts on the ``backend`` fixture's database; closed after the test."""
    parts = Parts(backend)
    yield parts
    parts.close()
