"""The chaos benchmark end to end in its smoke mode: its own multi-node ``Cluster`` in a
process of its own (this package's cluster fixture is not used), 4 threads undisturbed and
4 with one worker node killed; every thread done, each task charged exactly once."""

from __future__ import annotations

import pytest
from support.benchmark_smoke import positive, run_smoke

pytestmark = pytest.mark.slow


def test_chaos_smoke(tmp_path):
    r = run_smoke("chaos", tmp_path, timeout=280)
    assert r["chaos"]["kills"] == 1 and positive(r["ratio"])
    for run in (r["undisturbed"], r["chaos"]):
        assert run["done"] == run["threads"] == 4
        assert run["duplicate_charges"] == run["missing_charges"] == 0
