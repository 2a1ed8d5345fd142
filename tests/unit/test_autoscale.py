"""The operator pools' autoscaling policy (Serve's rule), and where its config comes from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tilemore.engine.autoscale import Autoscaling, ScalePolicy, autoscaling_for
from tilemore.errors import TilemoreError
from tilemore.operator import Operator
from tilemore.settings import Settings

FAST = Autoscaling(min_replicas=1, max_replicas=4, target_ongoing_requests=2,
                   upscale_delay_s=1, downscale_delay_s=5, look_back_period_s=0.5)


def run(policy: ScalePolicy, load: list[tuple[float, float]], current: int) -> list[int]:
    """Feed (time, ongoing) samples, acting on each decision; the replicas after each."""
    seen = []
    for now, ongoing in load:
        current = policy.decide(now, ongoing, current)
        seen.append(current)
    return seen


def ticks(start: float, stop: float, ongoing: float, step: float = 0.25):
    n = round((stop - start) / step)
    return [(start + i * step, ongoing) for i in range(n)]


def test_desired_is_ongoing_over_target_rounded_up_and_clamped():
    policy = ScalePolicy(FAST)
    assert [policy.desired(n) for n in (0, 1, 2, 3, 4, 5, 8, 100)] == [1, 1, 1, 2, 2, 3, 4, 4]


def test_grows_once_the_load_has_lasted_the_upscale_delay():
    policy = ScalePolicy(FAST)
    seen = run(policy, ticks(0, 2, ongoing=7), current=1)
    assert seen[:4] == [1, 1, 1, 1]  # not before upscale_delay_s
    assert seen[4] == 4  # ceil(7 / 2) = 4, in one step
    assert seen[-1] == 4


def test_shrinks_to_min_only_after_the_downscale_delay():
    policy = ScalePolicy(FAST)
    busy = run(policy, ticks(0, 2, ongoing=8), current=1)
    assert busy[-1] == 4
    idle = run(policy, ticks(2, 10, ongoing=0), current=4)
    # the look-back mean falls to 0 within 0.5 s, then 5 s of wanting fewer
    first_drop = next(i for i, n in enumerate(idle) if n < 4)
    assert 5 <= first_drop * 0.25 <= 5.75
    assert idle[-1] == 1 and set(idle[first_drop:]) == {1}


def test_never_outside_min_and_max():
    cfg = Autoscaling(min_replicas=2, max_replicas=3, upscale_delay_s=0, downscale_delay_s=0,
                      look_back_period_s=0.1)
    policy = ScalePolicy(cfg)
    assert run(policy, [(0, 1000)], current=2) == [3]
    assert run(policy, [(1, 0)], current=3) == [2]
    # out of bounds (a pool just made, a replica gone): clamped at once, no delay
    slow = ScalePolicy(FAST.model_copy(update={"min_replicas": 2}))
    assert slow.decide(0, 0, current=1) == 2
    assert slow.decide(0.1, 0, current=9) == 4


def test_a_floor_raises_min():
    policy = ScalePolicy(FAST, floor=3)
    assert policy.bounds == (3, 4)
    assert policy.decide(0, 0, current=3) == 3
    assert ScalePolicy(FAST, floor=6).bounds == (6, 6)


def test_no_flapping_under_a_bursty_load():
    """Load that swings around the threshold faster than the delays never resizes the pool:
    each change of mind restarts the clock."""
    policy = ScalePolicy(FAST.model_copy(update={"look_back_period_s": 0.01}))
    load = [(t * 0.25, 6 if (t // 2) % 2 else 0) for t in range(80)]  # 0.5 s bursts
    assert set(run(policy, load, current=2)) == {2}


def test_a_blip_inside_the_look_back_window_is_averaged_away():
    policy = ScalePolicy(FAST.model_copy(update={"look_back_period_s": 2, "upscale_delay_s": 0}))
    load = [(0.0, 0), (0.25, 0), (0.5, 0), (0.75, 0), (1.0, 0), (1.25, 0), (1.5, 0), (1.75, 5)]
    assert run(policy, load, current=1) == [1] * 8  # the mean is 5/8: one replica does


def test_reset_restarts_the_delay():
    policy = ScalePolicy(FAST)
    run(policy, ticks(0, 0.75, ongoing=8), current=1)
    policy.reset()
    assert run(policy, ticks(0.75, 1.5, ongoing=8), current=1)[-1] == 1
    assert policy.decide(1.75, 8, 1) == 4


class Plain(Operator):
    name = "plain"


class Elastic(Operator):
    name = "elastic"
    autoscaling = Autoscaling(max_replicas=3)


def test_config_comes_from_the_operator_then_settings():
    assert autoscaling_for(Plain, Settings()) is None  # the default: a fixed pool
    assert autoscaling_for(Elastic, Settings()) == Autoscaling(max_replicas=3)
    star = Settings(operator_autoscaling={"*": {"max_replicas": 5}})
    assert autoscaling_for(Plain, star).max_replicas == 5
    assert autoscaling_for(Elastic, star).max_replicas == 3  # its own beats "*"
    named = Settings(operator_autoscaling={"elastic": {"max_replicas": 8}, "plain": None})
    assert autoscaling_for(Elastic, named).max_replicas == 8
    off = Settings(operator_autoscaling={"elastic": None, "*": {"max_replicas": 2}})
    assert autoscaling_for(Elastic, off) is None


def test_settings_from_the_environment():
    s = Settings.from_env({"TILEMORE_OPERATOR_AUTOSCALING": '{"nlmeans": {"max_replicas": 4}}',
                           "TILEMORE_INGRESS_MAX_REPLICAS": "3",
                           "TILEMORE_INGRESS_DOWNSCALE_DELAY_S": "60"})
    assert s.operator_autoscaling["nlmeans"].max_replicas == 4
    ingress = s.ingress_autoscaling
    assert ingress is not None and (ingress.min_replicas, ingress.max_replicas) == (1, 3)
    assert ingress.downscale_delay_s == 60 and ingress.target_ongoing_requests == 8
    assert Settings().ingress_autoscaling is None  # unset: a fixed ingress_replicas
    for env, var in [({"TILEMORE_OPERATOR_AUTOSCALING": "max=4"}, "OPERATOR_AUTOSCALING"),
                     ({"TILEMORE_INGRESS_MIN_REPLICAS": "3", "TILEMORE_INGRESS_MAX_REPLICAS": "2"},
                      "INGRESS_MAX_REPLICAS")]:
        with pytest.raises(TilemoreError, match=var):
            Settings.from_env(env)
    with pytest.raises(ValidationError, match="max_replicas"):
        Autoscaling(min_replicas=3, max_replicas=2)


def test_the_ingress_gets_serves_autoscaling_config():
    ingress = pytest.importorskip("tilemore_deployments.ingress")
    from ray.serve.config import AutoscalingConfig

    s = Settings(ingress_max_replicas=4, ingress_look_back_period_s=2)
    config = ingress.serve_autoscaling(s.ingress_autoscaling)
    assert config["metrics_interval_s"] < config["look_back_period_s"]
    with pytest.warns(Warning):  # Serve deprecates the field, and still honours it
        AutoscalingConfig(**config)
    default = ingress.serve_autoscaling(Settings(ingress_max_replicas=4).ingress_autoscaling)
    assert AutoscalingConfig(**default).max_replicas == 4 and "metrics_interval_s" not in default


def test_serve_yaml_autoscales_the_ingress_with_the_same_names():
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    from ray.serve.schema import ServeDeploySchema

    path = Path(__file__).parents[2] / "tilemore_deployments" / "serve.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (ingress,) = config.applications[0].deployments
    assert ingress.name == "Ingress"
    ours = Autoscaling(**ingress.autoscaling_config)  # every key one of ours, valid
    assert ours.min_replicas >= 2 and ours.max_replicas > ours.min_replicas
