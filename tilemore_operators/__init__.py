"""Tilemore's built-in operators and the example "Denoised" pipelines.

Installed as the ``tilemore_operators`` package; each module holds one family of operators.
"""

from pathlib import Path


def pipeline_dir() -> Path:
    """The example pipelines' folder (the ``tilemore.pipelines`` entry point)."""
    return Path(__file__).parent / "pipelines"
