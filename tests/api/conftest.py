from __future__ import annotations

from pathlib import Path

import pytest
from support.service_harness import Service

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("svc"),
                  pipeline_paths=[DATA / "slow.yaml", DATA / "broken.yaml"],
                  max_input_bytes=3_000_000, max_input_pixels=20_000_000)
    yield svc
    svc.close()
