"""The Python SDK against the real Tilemore HTTP service (the tests start it)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from decimal import Decimal

import pytest
import tilemore_sdk as sdk
from PIL import Image
from support.fault_proxy import DroppingProxy
from support.images import encode, noisy, photo

ADJUST = {"master": {"algorithm": "bilateral"}, "shifter": {"resize": {"width": 48}}}


def client(service, endpoint=None, token=None, **options) -> sdk.Tilemore:
    return sdk.Tilemore(api_endpoint=endpoint or service.url, api_token=token or service.token,
                        domain="acme", debug_mode=False, poll_interval=0.05, **options)


def picture(seed: int) -> bytes:
    return encode(noisy(photo(96, 72), 10, seed=seed), "JPEG", quality=90)


def threads(service) -> int:
    return service.store._query("SELECT COUNT(*) AS n FROM threads")[0]["n"]  # noqa: SLF001


def test_submit_path_bytes_and_file_object(service, tmp_path):
    src = tmp_path / "in.jpg"
    src.write_bytes(picture(1))
    out = tmp_path / "out.png"
    with client(service) as tm:
        result = tm.submit(str(src), "png", ADJUST, meta={"ref": "a"}, output=out)
        assert Image.open(out).size == (48, 36) and out.read_bytes() == result.data
        assert result.content_type == "image/png"
        assert hashlib.sha256(result.data).hexdigest() == result.sha256
        assert Decimal(result.credits_charged) > 0
        assert tm.submit(src.read_bytes(), "png", ADJUST).thread_id == result.thread_id
        with open(src, "rb") as f:
            assert tm.submit(f, "png", ADJUST).thread_id == result.thread_id
        assert Image.open(result.stream()).format == "PNG"


def test_resubmit_reuses_the_thread_and_is_not_charged_again(service):
    with client(service) as tm:
        first = tm.submit(picture(2), "webp", ADJUST)
        balance = Decimal(tm.balance()["balance"])
        count = threads(service)
        again = tm.submit(picture(2), "webp", ADJUST)
        assert again.thread_id == first.thread_id and again.data == first.data
        assert Decimal(tm.balance()["balance"]) == balance
        assert threads(service) == count
        assert len(tm.history()) == 31


def test_connection_dropped_mid_upload_is_recovered(service):
    proxy = DroppingProxy(service.port, drop_uploads=1, cut_after=2048)
    try:
        with client(service, endpoint=proxy.url, backoff=0.05) as tm:
            result = tm.submit(picture(3), "png", ADJUST)
        assert proxy.dropped == 1
        assert service.wait(result.thread_id)["status"] == "done"
    finally:
        proxy.close()


def test_4xx_is_a_typed_error(service):
    with client(service) as tm:
        with pytest.raises(sdk.InvalidRequestError) as info:
            tm.submit(picture(4), "png", {"master": {"strenght": 1}})
        assert info.value.code == "unknown_parameter" and info.value.status == 422
        with pytest.raises(sdk.InvalidRequestError) as info:
            tm.submit(b"not an image", "png", {})
        assert info.value.code == "corrupt_image"
        with pytest.raises(sdk.NotFoundError):
            tm.status("0" * 32)


def test_bad_input_fails_before_any_request(service, tmp_path):
    proxy = DroppingProxy(service.port, drop_uploads=0)
    try:
        with client(service, endpoint=proxy.url) as tm:
            with pytest.raises(sdk.InputError, match="no such file"):
                tm.submit(tmp_path / "missing.jpg", "png", {})
            with pytest.raises(sdk.InputError, match="folder"):
                tm.submit(tmp_path, "png", {})  # unreadable as an image file
            with pytest.raises(sdk.InputError, match="binary mode"):
                tm.submit(io.StringIO("text"), "png", {})
            with pytest.raises(sdk.UnsupportedFormatError):
                tm.submit(picture(5), "gif", {})
        assert proxy.requests == 0
    finally:
        proxy.close()


def test_wrong_token_is_an_authentication_error(service):
    with client(service, token="tm_wrong") as tm:
        with pytest.raises(sdk.AuthenticationError) as info:
            tm.submit(picture(6), "png", {})
    assert info.value.code == "invalid_token"


def test_unreachable_server_gives_up_after_bounded_retries():
    started = time.monotonic()
    with sdk.Tilemore(api_endpoint="http://127.0.0.1:9", api_token="t", domain="d",
                      max_retries=3, backoff=0.05) as tm:
        with pytest.raises(sdk.ConnectionFailed, match="after 4 attempts"):
            tm.submit(b"x", "png", {})
    assert time.monotonic() - started < 10


def test_failed_thread_raises_with_its_code(service):
    with client(service) as tm:
        with pytest.raises(sdk.TaskFailedError) as info:
            tm.submit(picture(7), "png", {}, pipeline="broken")
        assert info.value.code == "operator_failed" and info.value.thread_id
        with pytest.raises(sdk.NotFoundError) as missing:
            tm.submit(picture(7), "png", {}, pipeline="nope")
        assert missing.value.code == "unknown_pipeline"


def test_async_client_and_debug_mode(service, caplog):
    async def main():
        async with sdk.AsyncTilemore(service.url, service.token, "acme", debug_mode=True,
                                     poll_interval=0.05) as tm:
            return await asyncio.gather(*(tm.submit(picture(10 + i), "jpeg", ADJUST)
                                          for i in range(4)))

    with caplog.at_level("DEBUG", logger="tilemore_sdk"):
        results = asyncio.run(main())
    assert len({r.thread_id for r in results}) == 4
    assert any("→ POST" in m for m in caplog.messages)
    assert any("← 202" in m or "← 200" in m for m in caplog.messages)


def test_the_folder_example_submits_everything_and_resumes(service, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    src, dest = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.jpg").write_bytes(picture(20 + i))
    (src / "notes.txt").write_text("not an image")
    script = Path(__file__).parents[3] / "examples" / "submit_folder.py"
    argv = [sys.executable, str(script), str(src), str(dest), "--endpoint", service.url,
            "--token", service.token, "--domain", "acme", "-f", "png", "-j", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert "3/3" in done.stderr  # the progress bar's last state
    count = threads(service)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and threads(service) == count  # nothing ran twice
