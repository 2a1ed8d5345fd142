"""Rolling upgrades' policy (tilemore/service/generations.py), without Ray: which conductors
a deploy retires, and how a retired one is drained, then stopped."""

from __future__ import annotations

from tilemore.service.generations import (
    Retirement,
    generation_of,
    named,
    new_generation,
    older,
    superseded,
)


def test_a_later_deploy_draws_a_later_generation():
    times = iter([5, 1_700_000_000_000_000_000, 1_700_000_000_000_000_001])
    drawn = [new_generation(lambda: next(times)) for _ in range(3)]
    assert drawn == sorted(drawn) and len(set(map(len, drawn))) == 1


def test_names_carry_their_generation_and_old_names_count_as_oldest():
    assert named("tilemore-conductor", "00ab") == "tilemore-conductor@00ab"
    assert named("tilemore-conductor", "") == "tilemore-conductor"
    assert generation_of("tilemore-conductor-2@00ab") == "00ab"
    assert generation_of("tilemore-conductor") == ""
    names = ["tilemore-conductor", "tilemore-conductor@0001", "tilemore-conductor-1@0001",
             "tilemore-conductor@0002"]
    assert older(names, "0002") == ["tilemore-conductor", "tilemore-conductor-1@0001",
                                    "tilemore-conductor@0001"]
    assert older(names, "0001") == ["tilemore-conductor"]
    assert superseded(names, "0001") and not superseded(names, "0002")


class Conductor:
    def __init__(self, running: list[int]) -> None:
        self.running, self.drains, self.stopped = running, 0, False

    def drain(self) -> int:
        self.drains += 1
        return self.running.pop(0) if len(self.running) > 1 else self.running[0]


def test_a_retired_conductor_stops_only_once_it_runs_nothing():
    busy, idle = Conductor([2, 1, 0]), Conductor([0])
    retirement = Retirement(drain=Conductor.drain, stop=lambda c: setattr(c, "stopped", True))
    retirement.add("a", busy)
    retirement.add("b", idle)
    assert retirement.step() == 1 and idle.stopped and not busy.stopped
    assert retirement.step() == 1 and not busy.stopped
    assert retirement.step() == 0 and busy.stopped
    assert busy.drains == 3 and idle.drains == 1


def test_one_that_never_empties_is_stopped_after_the_most_time():
    now = [0.0]
    stuck = Conductor([3])
    retirement = Retirement(drain=Conductor.drain, stop=lambda c: setattr(c, "stopped", True),
                            most_seconds=60, clock=lambda: now[0])
    retirement.add("stuck", stuck)
    assert retirement.step() == 1 and not stuck.stopped
    now[0] = 61.0
    assert retirement.step() == 0 and stuck.stopped


def test_one_gone_already_is_stopped_without_waiting():
    def drain(_: object) -> int:
        raise RuntimeError("the actor died")

    stopped = []
    retirement = Retirement(drain=drain, stop=stopped.append)
    retirement.add("gone", "handle")
    assert retirement.step() == 0 and stopped == ["handle"]


def test_adding_a_conductor_twice_keeps_its_first_date():
    now = [0.0]
    retirement = Retirement(drain=lambda c: 1, stop=lambda c: None, most_seconds=10,
                            clock=lambda: now[0])
    retirement.add("a", "x")
    now[0] = 9.0
    retirement.add("a", "x")
    now[0] = 10.0
    assert retirement.step() == 0


def test_what_the_retired_conductors_used_goes_only_after_the_last_of_them():
    busy = Conductor([1, 0])
    order: list[str] = []
    retirement = Retirement(drain=Conductor.drain, stop=lambda c: order.append("conductor"))
    retirement.add("a", busy)
    retirement.run_in_background(poll_seconds=0.01, then=lambda: order.append("billing")
                                 ).join(timeout=10)
    assert order == ["conductor", "billing"]
    none_left: Retirement = Retirement(drain=Conductor.drain, stop=lambda c: None)
    none_left.run_in_background(then=lambda: order.append("at once")).join(timeout=10)
    assert order[-1] == "at once"  # no older conductor: older billing actors may still be
