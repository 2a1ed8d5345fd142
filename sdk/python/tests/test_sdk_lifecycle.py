"""list() and retry(), and a result past its retention, against the real service."""

from __future__ import annotations

from pathlib import Path

import pytest
import tilemore_sdk as sdk
from support.images import encode, noisy, photo
from support.service_harness import Service

TESTS = Path(__file__).parents[3] / "tests"
ADJUST = {"master": {"algorithm": "bilateral"}, "shifter": {"resize": {"width": 40}}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    service = Service(tmp_path_factory.mktemp("sdk-lifecycle"),
                      pipeline_paths=[TESTS / "data" / "broken.yaml"],
                      retention_results_seconds=3600, blob_grace_seconds=0)
    yield service
    service.close()


def picture(seed: int) -> bytes:
    return encode(noisy(photo(64, 48), 10, seed=seed), "JPEG", quality=90)


def client(svc: Service, **options) -> sdk.Tilemore:
    return sdk.Tilemore(svc.url, svc.token, "acme", poll_interval=0.05, **options)


def test_list_pages_newest_first_with_filters(svc):
    with client(svc, meta_parts=("sdk", "shop-a")) as shop, client(svc) as tm:
        made = [shop.wait(shop.create(picture(200 + i), "png", ADJUST)) for i in range(3)]
        other = tm.wait(tm.create(picture(210), "png", ADJUST))
        page = tm.list(meta_part="shop-a", limit=2)
        assert isinstance(page, sdk.ThreadPage) and len(page.threads) == 2
        assert [t.id for t in page.threads] == [made[2].id, made[1].id]  # newest first
        assert page.next_cursor is not None
        last = tm.list(meta_part=["sdk", "shop-a"], limit=2, cursor=page.next_cursor)
        assert [t.id for t in last.threads] == [made[0].id] and last.next_cursor is None
        every = [t.id for t in tm.iter_threads(meta_part="shop-a", limit=1)]
        assert every == [t.id for t in reversed(made)]
        assert other.id in {t.id for t in tm.iter_threads(status="done")}
        assert all(t.status == "done" for t in tm.list(status="done").threads)
        with pytest.raises(sdk.InvalidRequestError) as info:
            tm.list(limit=0)
        assert info.value.code == "invalid_limit"
        with pytest.raises(sdk.InvalidRequestError) as info:
            tm.list(cursor="not-a-cursor")
        assert info.value.code == "invalid_cursor"


def test_retry_runs_a_failed_thread_again(svc):
    with client(svc) as tm:
        failed = tm.wait(tm.create(picture(220), "png", {}, pipeline="broken"), check=False)
        assert failed.status == "failed"
        again = tm.retry(failed)
        assert isinstance(again, sdk.Thread) and again.id == failed.id  # the same thread
        with pytest.raises(sdk.TaskFailedError):  # the operator still breaks
            tm.wait(again)
        with pytest.raises(sdk.NotFoundError):
            tm.retry("0" * 32)


def age(svc: Service, thread_id: str, seconds: float) -> None:
    """The result's retention ends, on the database's clock (as the API tests do it)."""
    with svc.lifecycle.store._tx() as db:  # noqa: SLF001 - time passing, by hand
        db.execute("UPDATE thread_expiry SET result_until = result_until - ? WHERE "
                   "thread_id = ?", (seconds, thread_id))
        db.execute("UPDATE blob_refs SET expires_at = expires_at - ? WHERE thread_id = ? AND "
                   "kind = 'result'", (seconds, thread_id))


def test_an_expired_result_is_a_typed_error_and_retry_runs_it_again(svc, tmp_path):
    image = picture(230)
    with client(svc) as tm:
        done = tm.wait(tm.create(image, "png", ADJUST))
        age(svc, done.id, 7200)
        svc.collector.run_pass()
        with pytest.raises(sdk.ResultExpiredError) as info:
            tm.download(done, tmp_path / "out.png")
        assert info.value.code == "result_expired" and info.value.status == 410
        assert not (tmp_path / "out.png").exists()
        with pytest.raises(sdk.ResultExpiredError):  # the same request: told to retry
            tm.run(image, "png", ADJUST)
        fresh = tm.wait(tm.retry(done))
        assert fresh.id != done.id and fresh.status == "done"
        assert tm.run(image, "png", ADJUST).thread_id == fresh.id  # the request leads there
