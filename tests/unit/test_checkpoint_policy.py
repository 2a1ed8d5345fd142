"""The checkpoint policy: a task's output is stored only when its run took longer than
storing it would, as each replica learns from its own puts; a selector's verdict always."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import photo

from tilemore.engine.checkpoint_policy import CheckpointPolicy, PutCost, raw_bytes
from tilemore.engine.host import OperatorHost
from tilemore.image import Encoded, Image
from tilemore.operator import Operator, OperatorParams, Selection
from tilemore.settings import Settings

MB = 1_000_000


def test_the_cost_of_a_put_is_learnt_from_small_and_large_puts():
    cost = PutCost(fixed=0.002, per_mb=0.005)
    for _ in range(40):
        cost.observed(1000, 0.010)  # small: the fixed part is 10 ms here
    assert cost.fixed == pytest.approx(0.010, rel=0.01)
    for _ in range(40):
        cost.observed(10 * MB, 0.010 + 0.2)  # 20 ms a raw megabyte
    assert cost.per_mb == pytest.approx(0.02, rel=0.01)
    assert cost.estimate(5 * MB) == pytest.approx(0.11, rel=0.02)


def test_a_put_faster_than_the_fixed_part_never_makes_the_rate_negative():
    cost = PutCost(fixed=0.5, per_mb=0.01)
    cost.observed(10 * MB, 0.1)
    assert cost.per_mb >= 0


@pytest.mark.parametrize(("seconds", "stored"), [(0.001, False), (0.03, True)])
def test_costly_stores_what_ran_longer_than_its_put(seconds, stored):
    policy = CheckpointPolicy("costly", put_seconds=0.002, put_mb_per_second=100)
    image = Image(np.zeros((1000, 1000, 3), np.uint8))  # 3 MB raw: 32 ms to store
    assert policy.worth_storing(seconds, image) is False
    assert policy.worth_storing(seconds, b"x" * 100) is stored  # 2 ms
    assert policy.worth_storing(0.0, Selection(pick=0, scores=[1.0]), verdict=True)
    assert CheckpointPolicy("always").worth_storing(0.0, image)


def test_raw_sizes():
    assert raw_bytes(Image(np.zeros((4, 5, 3), np.uint8))) == 60
    assert raw_bytes(Encoded(b"abc", "png", "image/png", 1, 1)) == 3
    assert raw_bytes(b"12345") == 5 and raw_bytes(Selection(pick=0, scores=[0.0])) == 0


class Sleepy(Operator):
    name = "sleepy"

    class Params(OperatorParams):
        seconds: float = 0.0

    def process(self, params, image: Image) -> Image:
        import time
        time.sleep(params.seconds)
        return image


class Pick(Operator):
    name = "pick"
    role = "selector"

    def process(self, params, original: Image, *candidates: Image) -> Selection:
        return Selection(pick=0, scores=[0.0] * len(candidates))


def test_a_replica_stores_the_slow_task_the_verdict_and_learns_its_puts(tmp_path):
    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True, checkpoint_put_seconds=0.05)
    host = OperatorHost(Sleepy, settings)
    image = Image(photo(32, 24))
    _, fast = host.run("t1", Sleepy.Params(seconds=0), image)
    _, slow = host.run("t2", Sleepy.Params(seconds=0.1), image)
    assert fast.checkpoint is None and fast.checkpoint_bytes == 0
    assert slow.checkpoint is not None and slow.checkpoint_bytes > 0
    assert host.policy.cost.fixed < 0.05  # learnt from that put, far cheaper than assumed

    picker = OperatorHost(Pick, settings)
    out, st = picker.run("t3", OperatorParams(), image, image)
    assert st.checkpoint is not None and st.selection is not None and out is image


def test_nothing_is_stored_when_the_service_does_not_checkpoint(tmp_path):
    host = OperatorHost(Sleepy, Settings(data_dir=tmp_path))
    _, st = host.run("t", Sleepy.Params(seconds=0.01), Image(photo(8, 8)))
    assert st.checkpoint is None


def test_the_policy_is_read_from_the_environment():
    s = Settings.from_env({"TILEMORE_CHECKPOINT_POLICY": "always",
                           "TILEMORE_CHECKPOINT_PUT_SECONDS": "0.02",
                           "TILEMORE_CHECKPOINT_PUT_MB_PER_SECOND": "50"})
    policy = CheckpointPolicy.of(s)
    assert policy.mode == "always" and policy.cost.fixed == 0.02 and policy.cost.per_mb == 0.02
    assert CheckpointPolicy.of(Settings.from_env({})).mode == "costly"


@pytest.mark.parametrize(("variable", "value"), [
    ("TILEMORE_CHECKPOINT_POLICY", "sometimes"),
    ("TILEMORE_CHECKPOINT_PUT_SECONDS", "-1"),
    ("TILEMORE_CHECKPOINT_PUT_SECONDS", "11"),
    ("TILEMORE_CHECKPOINT_PUT_MB_PER_SECOND", "0"),
    ("TILEMORE_CHECKPOINT_PUT_MB_PER_SECOND", "1e9"),
])
def test_a_bad_policy_setting_is_refused_by_name(variable, value):
    from tilemore.errors import TilemoreError

    with pytest.raises(TilemoreError) as info:
        Settings.from_env({variable: value})
    assert info.value.code == "invalid_setting" and str(info.value).startswith(variable)
