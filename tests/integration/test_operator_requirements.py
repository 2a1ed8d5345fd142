"""An operator module's REQUIREMENTS become the pip runtime_env of its replicas on Ray: the
replica runs in the virtualenv Ray made for that list (a package already installed here, so
pip needs no index).

Ray builds that virtualenv as a copy of the driver's (torch and its CUDA wheels included: 6 GB),
and keeps it in the session folder until the machine is cleaned; the test removes it, so a
machine that runs the tests many times does not fill its disk."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import ray

from tilemore.registry import OperatorRegistry


@pytest.mark.slow
def test_replicas_run_in_the_pip_env_of_their_module(tmp_path, ray_backend):
    path = tmp_path / "needy_ops.py"
    path.write_text(textwrap.dedent("""
        from tilemore.operator import Operator

        REQUIREMENTS = ["packaging"]


        class Needy(Operator):
            name = "needy"

            def setup(self):
                import sys
                self.prefix = sys.prefix

            def process(self, params, image):
                return image
    """))
    (needy,) = OperatorRegistry().load(str(path))
    ray_backend.prepare([needy])
    (actor,) = ray_backend.replicas(needy)
    prefix, env = ray.get(actor.__ray_call__.remote(
        lambda host: (host.operator.prefix, ray.get_runtime_context().runtime_env)),
        timeout=240)
    ray_backend.close()  # the env's one user goes, then the env
    env_dir = Path(prefix).parent  # runtime_resources/pip/<hash>/virtualenv
    if env_dir.parent.name == "pip":
        shutil.rmtree(env_dir, ignore_errors=True)
    assert env["pip"]["packages"] == ["packaging"]
    assert "runtime_resources/pip" in prefix  # the replica's interpreter is that env's
