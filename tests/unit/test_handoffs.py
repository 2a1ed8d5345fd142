"""tilemore.service.handoffs: the ingress hands each new thread to one of its deploy's running
conductors, and to the first when that one declines or is gone."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import Future

from tilemore.service.handoffs import HandOffs


class Conductors:
    """Named conductors that take or decline threads, and the list Ray would give."""

    def __init__(self, *names: str) -> None:
        self.running = list(names)
        self.declining: set[str] = set()
        self.gone: set[str] = set()
        self.asked: list[tuple[str, str]] = []  # (conductor, thread)
        self.listed = 0

    def names(self) -> list[str]:
        self.listed += 1
        return list(self.running)

    def submit(self, name: str, thread_id: str) -> Future[bool]:
        self.asked.append((name, thread_id))
        done: Future[bool] = Future()
        if name in self.gone:
            done.set_exception(RuntimeError(f"{name} died"))
        else:
            done.set_result(name not in self.declining)
        return done


def handoffs(conductors: Conductors, now: list[float]) -> HandOffs[str]:
    return HandOffs("c0", conductors.names, handle=lambda name: name, clock=lambda: now[0])


def test_new_threads_are_spread_over_the_running_conductors():
    c, now = Conductors("c0", "c1", "c2"), [0.0]
    h = handoffs(c, now)
    for _ in range(300):
        h.hand_off(uuid.uuid4().hex, c.submit)
    shares = Counter(name for name, _ in c.asked)
    assert set(shares) == {"c0", "c1", "c2"} and min(shares.values()) > 60, shares
    assert c.listed == 1  # read once within the refresh time


def test_the_list_is_read_again_after_the_refresh_time():
    c, now = Conductors("c0"), [0.0]
    h = handoffs(c, now)
    h.choose("00000001")
    c.running.append("c1")  # the pool started one
    assert {h.choose(f"{i:08x}")[0] for i in range(8)} == {"c0"}
    now[0] += 5.1
    assert {h.choose(f"{i:08x}")[0] for i in range(8)} == {"c0", "c1"}
    c.running.remove("c1")  # and stopped it
    now[0] += 5.1
    assert {h.choose(f"{i:08x}")[0] for i in range(8)} == {"c0"}


def test_a_conductor_that_declines_or_is_gone_leaves_the_thread_to_the_first():
    c, now = Conductors("c0", "c1"), [0.0]
    h = handoffs(c, now)
    odd = "00000001"  # 1 % 2: c1
    c.declining.add("c1")
    h.hand_off(odd, c.submit)
    assert c.asked == [("c1", odd), ("c0", odd)]
    c.asked.clear()
    c.declining.clear()
    c.gone.add("c1")
    h.hand_off(odd, c.submit)
    assert c.asked == [("c1", odd), ("c0", odd)]
    c.asked.clear()
    c.gone.clear()
    h.hand_off(odd, c.submit)  # taken: nobody else is asked
    assert c.asked == [("c1", odd)]


def test_the_first_alone_when_the_list_cannot_be_read():
    now = [0.0]

    def broken() -> list[str]:
        raise ConnectionError("the GCS is restarting")

    h: HandOffs[str] = HandOffs("c0", broken, handle=lambda name: name, clock=lambda: now[0])
    assert h.choose(uuid.uuid4().hex) == ("c0", "c0")


def test_the_first_is_always_a_choice_even_when_not_listed_yet():
    c, now = Conductors("c1"), [0.0]
    h = handoffs(c, now)
    assert {h.choose(f"{i:08x}")[0] for i in range(8)} == {"c0", "c1"}
