"""Tilemore: a production harness for computer-vision pipelines on Ray.

The public surface for people who write operators and pipelines; everything else is internal.
"""

from tilemore.errors import TilemoreError
from tilemore.image import Encoded, Image
from tilemore.operator import (
    NoParams,
    Operator,
    OperatorParams,
    Price,
    Resources,
    Selection,
)
from tilemore.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Encoded", "Image", "NoParams", "Operator", "OperatorParams", "Price", "Resources",
    "Selection", "Settings", "TilemoreError", "__version__",
]
