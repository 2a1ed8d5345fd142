from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[3] / "tests"
sys.path.insert(0, str(TESTS))  # the service harness and test images of the main project

from support.service_harness import Service  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("sdk"), pipeline_paths=[TESTS / "data" / "broken.yaml"])
    yield svc
    svc.close()
