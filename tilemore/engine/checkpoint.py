"""Task outputs as bytes, for the blob store: raw pixels with a small JSON header.

Not pickle: a checkpoint read back from shared storage must never run code.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import asdict
from typing import Any

import numpy as np

from tilemore.image import Encoded, Image
from tilemore.operator import Selection

_MAGIC = b"TMCK1"


def dump(value: Any) -> bytes:
    if isinstance(value, Image):
        header = {"kind": "image", "shape": list(value.pixels.shape),
                  "icc_profile": _b64(value.icc_profile), "exif": _b64(value.exif),
                  "source_format": value.source_format, "extra": value.extra}
        body = np.ascontiguousarray(value.pixels).tobytes()
    elif isinstance(value, Encoded):
        header = {"kind": "encoded", "format": value.format, "content_type": value.content_type,
                  "width": value.width, "height": value.height}
        body = value.data
    elif isinstance(value, Selection):
        header, body = {"kind": "selection", **asdict(value)}, b""
    elif isinstance(value, bytes):
        header, body = {"kind": "bytes"}, value
    else:
        raise TypeError(f"cannot checkpoint a {type(value).__name__}")
    head = json.dumps(header).encode()
    return _MAGIC + struct.pack(">I", len(head)) + head + body


def load(data: bytes) -> Any:
    if not data.startswith(_MAGIC):
        raise ValueError("not a Tilemore checkpoint")
    (n,) = struct.unpack(">I", data[5:9])
    header = json.loads(data[9:9 + n])
    body = memoryview(data)[9 + n:]
    kind = header.pop("kind")
    if kind == "image":
        pixels = np.frombuffer(body, dtype=np.uint8).reshape(header["shape"]).copy()
        return Image(pixels, _unb64(header["icc_profile"]), _unb64(header["exif"]),
                     header["source_format"], header["extra"])
    if kind == "encoded":
        return Encoded(bytes(body), **header)
    if kind == "selection":
        return Selection(**header)
    return bytes(body)


def _b64(value: bytes | None) -> str | None:
    return base64.b64encode(value).decode() if value else None


def _unb64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None
