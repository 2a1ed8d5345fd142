"""The ingress's hand-offs on Ray (tilemore_deployments.conductor.hand_offs' parts): new threads
go to every running conductor of the deploy, found by name, and what one declines goes to the
first. Stand-in conductors (named actors that take or decline) of a generation of their own."""

from __future__ import annotations

import time
import uuid

import ray

from tilemore.service.handoffs import HandOffs
from tilemore_deployments.conductor import (
    NAMESPACE,
    conductor_handle,
    conductor_name,
    conductors_of,
    submit,
)

GENERATION = "0-handoff-test"  # older than any real deploy's, and killed at the end


@ray.remote(num_cpus=0)
class StandIn:
    def __init__(self, takes: bool) -> None:
        self.takes, self.asked = takes, []

    def submit(self, thread_id: str) -> bool:
        self.asked.append(thread_id)
        return self.takes

    def seen(self) -> list[str]:
        return self.asked


def stand_ins(takes: list[bool]) -> list:
    return [StandIn.options(name=conductor_name(slot, GENERATION), namespace=NAMESPACE)
            .remote(t) for slot, t in enumerate(takes)]


def hand(n: int) -> list[str]:
    handoffs = HandOffs(conductor_name(0, GENERATION), names=lambda: conductors_of(GENERATION),
                        handle=conductor_handle)
    threads = [uuid.uuid4().hex for _ in range(n)]
    for tid in threads:
        handoffs.hand_off(tid, submit)
    return threads


def seen(actors: list, expected: int) -> list[list[str]]:
    deadline = time.monotonic() + 30
    while True:
        got = ray.get([a.seen.remote() for a in actors])
        if sum(map(len, got)) >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_threads_are_handed_to_every_conductor_of_the_deploy():
    actors = stand_ins([True, True])
    try:
        assert set(conductors_of(GENERATION)) == {conductor_name(0, GENERATION),
                                                  conductor_name(1, GENERATION)}
        threads = hand(40)
        first, second = seen(actors, 40)
        assert sorted(first + second) == sorted(threads)  # each once
        assert first and second
    finally:
        for a in actors:
            ray.kill(a)


def test_what_a_conductor_declines_goes_to_the_first():
    actors = stand_ins([True, False])
    try:
        threads = hand(40)
        first, second = seen(actors, 40 + 1)
        deadline = time.monotonic() + 30
        while len(first) < 40 and time.monotonic() < deadline:
            first, second = seen(actors, 40 + len(second))
        assert sorted(first) == sorted(threads) and second  # declined, then taken by c0
    finally:
        for a in actors:
            ray.kill(a)
