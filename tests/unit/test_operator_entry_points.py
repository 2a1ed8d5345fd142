"""The core finds operators and pipelines through entry points, never by a package's name: an
installed package adds its own the way the built-ins are added (pyproject.toml)."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

from tilemore.catalog import builtin_pipeline_dirs
from tilemore.registry import OperatorRegistry

ROOT = Path(__file__).parents[2]


def install_fake_distribution(folder: Path) -> None:
    """A distribution as pip leaves it: a module and its .dist-info with entry points."""
    (folder / "extra_ops.py").write_text(textwrap.dedent("""
        from tilemore.operator import Operator

        class Sepia(Operator):
            name = "sepia"

            def process(self, params, image):
                return image
    """))
    info = folder / "extra_ops-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-ops\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tilemore.operators]\nsepia = extra_ops\n")


def test_the_built_ins_come_from_entry_points():
    registry = OperatorRegistry.with_builtins()
    for name in ("decode", "nlmeans", "dncnn", "qc-residual", "shifter", "encoder"):
        assert registry.get(name).name == name
    (folder,) = builtin_pipeline_dirs()
    assert (folder / "denoised.yaml").is_file()


def test_an_installed_package_adds_its_operators(tmp_path, monkeypatch):
    install_fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = OperatorRegistry.with_builtins()
        assert registry.get("sepia").__module__ == "extra_ops"
        assert registry.get("decode").name == "decode"  # the built-ins still there
        # Installed on every node as tilemore is: its modules are not shipped by value.
        from tilemore.engine.ray_pools import installed_packages

        installed_packages.cache_clear()
        assert {"tilemore", "tilemore_operators", "extra_ops"} <= installed_packages()
    finally:
        sys.modules.pop("extra_ops", None)
        from tilemore.engine.ray_pools import installed_packages

        installed_packages.cache_clear()


def test_the_core_imports_no_operator_package():
    """Not at module level, not inside a function: the core's modules name none."""
    offenders = []
    for path in sorted((ROOT / "tilemore").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] == "tilemore_operators"]
    assert offenders == []
