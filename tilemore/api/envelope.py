"""What a submission says, checked, and the idempotency key it maps to.

The key is a hash of everything that changes the work or who pays for it: the domain, the
billed account, the meta parts, the image hash, the canonical JSON of the adjustments, the
output format and the pipeline's fingerprint. ``meta`` is not in it: it is the caller's note.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tilemore.errors import TilemoreError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
META_PART = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._~-]{0,127}\Z")  # \Z: no newline after it
MAX_META_PARTS = 8


class BadRequest(TilemoreError):
    status = 400


class InvalidEnvelope(TilemoreError):
    code = "invalid_envelope"
    status = 422


class MetaTooLarge(TilemoreError):
    code = "meta_too_large"
    status = 413


# JSON numbers are parsed with bounded digits: a parameter is a size, a quality or a
# strength, never a 4,000-digit integer or an exponent that takes seconds to expand.
MAX_NUMBER_CHARS = 24


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adjustments: dict[str, Any]
    output_format: str = "jpeg"
    meta: dict[str, Any] = Field(default_factory=dict)
    pipeline: str | None = Field(None, description="default: the service's default pipeline")
    account: str | None = Field(None, description="a sub-account to run and bill this for")


def parse_envelope(raw: bytes | str, max_meta_bytes: int = 4096) -> Envelope:
    """The envelope, checked; ``meta`` (echoed on every answer) no larger than
    ``max_meta_bytes`` as compact JSON."""
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise InvalidEnvelope("the envelope must be a JSON object")
    meta = value.get("meta")
    if meta is not None and len(canonical_json(meta).encode()) > max_meta_bytes:
        raise MetaTooLarge(f"envelope.meta is over the limit of {max_meta_bytes:,} bytes (as "
                           "compact JSON)")
    try:
        return Envelope.model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        code = "missing_adjustments" if err["loc"] == ("adjustments",) and err["type"] == (
            "missing") else "invalid_envelope"
        raise InvalidEnvelope(f"envelope.{loc}: {err['msg']}", code=code) from None


def parse_json(raw: bytes | str) -> Any:
    """JSON as requests carry it: no NaN or Infinity, numbers of bounded length, text that
    can be sent back (no lone surrogates). Malformed: 400 ``malformed_json``."""
    try:
        value = json.loads(raw, parse_constant=_no_constants, parse_int=_int,
                           parse_float=_float)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be sent
    except (json.JSONDecodeError, UnicodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    return value


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"the number {text[:12]}… has more than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _float(text: str) -> float:
    value = _int(text) if len(text) > MAX_NUMBER_CHARS else float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def check_image_hash(value: str) -> str:
    if not SHA256.match(value):
        raise BadRequest("the image hash in the URL must be 64 lowercase hex digits (SHA-256)",
                         code="invalid_hash")
    return value


def check_meta_parts(raw_path: str) -> list[str]:
    """Meta parts from the raw (still percent-encoded) path: no dot segments, no encoded
    slashes or other tricks — each part is a plain name."""
    parts = [p for p in raw_path.strip("/").split("/")]
    if len(parts) > MAX_META_PARTS:
        raise BadRequest(f"at most {MAX_META_PARTS} meta parts", code="invalid_meta_parts")
    for part in parts:
        if part in ("", ".", "..") or unquote(part) != part or not META_PART.match(part):
            raise BadRequest(f"meta part '{part}' is not allowed (letters, digits and . _ ~ -)",
                             code="invalid_meta_parts")
    return parts


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def idempotency_key(*, domain: str, account: str, meta_parts: list[str], image_sha256: str,
                    adjustments: dict[str, Any], output_format: str, pipeline: str,
                    fingerprint: str) -> str:
    blob = canonical_json({
        "domain": domain, "account": account, "meta_parts": meta_parts, "image": image_sha256,
        "adjustments": adjustments, "output_format": output_format, "pipeline": pipeline,
        "fingerprint": fingerprint,
    })
    return hashlib.sha256(blob.encode()).hexdigest()
