"""The long polls' waiter, on a status table it reads in batches (no HTTP, no database)."""

from __future__ import annotations

import asyncio

import pytest

from tilemore.api.waiting import InvalidWait, Waiter, prefer_wait, wait_query


class Statuses:
    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self.reads: list[list[str]] = []
        self.fail = False

    def __call__(self, ids: list[str]) -> dict[str, str]:
        self.reads.append(ids)
        if self.fail:
            raise OSError("database unreachable")
        return {i: self.table[i] for i in ids if i in self.table}


def test_many_waits_share_one_read_per_tick():
    statuses = Statuses()
    statuses.table = {f"t{i}": "processing" for i in range(300)}
    waiter = Waiter(statuses, tick=0.01)

    async def scenario() -> list[bool]:
        waits = [asyncio.create_task(waiter.until_ended(f"t{i}", 5)) for i in range(300)]
        await asyncio.sleep(0.1)
        for i in range(0, 300, 2):
            statuses.table[f"t{i}"] = "done"
        done = await asyncio.gather(*waits[::2])
        assert waiter.waiting == 150
        for i in range(1, 300, 2):
            statuses.table[f"t{i}"] = "failed"
        return done + list(await asyncio.gather(*waits[1::2]))

    assert all(asyncio.run(scenario()))
    assert waiter.waiting == 0
    # Every read asked about every thread still waited for, all in one query.
    assert len(statuses.reads) < 100
    assert max(len(ids) for ids in statuses.reads) == 300


def test_a_wait_runs_out_and_a_gone_record_ends_one():
    statuses = Statuses()
    statuses.table = {"slow": "processing"}
    waiter = Waiter(statuses, tick=0.005)

    async def scenario() -> tuple[bool, bool]:
        return (await waiter.until_ended("slow", 0.05),
                await waiter.until_ended("collected", 1))

    assert asyncio.run(scenario()) == (False, True)


def test_a_full_waiter_answers_at_once():
    statuses = Statuses()
    statuses.table = {"a": "processing", "b": "processing"}
    waiter = Waiter(statuses, tick=0.005, max_waiting=1)

    async def scenario() -> bool:
        first = asyncio.create_task(waiter.until_ended("a", 0.2))
        await asyncio.sleep(0)
        second = await waiter.until_ended("b", 10)  # not held: the client polls instead
        await first
        return second

    assert asyncio.run(scenario()) is False


def test_reads_that_fail_let_the_waits_time_out():
    statuses = Statuses()
    statuses.fail = True
    waiter = Waiter(statuses, tick=0.005)
    assert asyncio.run(waiter.until_ended("x", 0.1)) is False
    assert statuses.reads  # it tried


@pytest.mark.parametrize(("value", "seconds"), [
    (None, 0.0), ("0", 0.0), ("5", 5.0), ("2.5", 2.5), ("60", 60.0), ("60.000", 60.0)])
def test_wait_query(value, seconds):
    assert wait_query(value) == seconds


@pytest.mark.parametrize("value", ["61", "60.5", "-1", "1e3", "abc", "", " 5", "5\n",
                                   "1.2345", "0x10", "9" * 1000])
def test_wait_query_refuses(value):
    with pytest.raises(InvalidWait):
        wait_query(value)


@pytest.mark.parametrize(("header", "seconds"), [
    (None, 0), ("", 0), ("wait=5", 5), ("respond-async, wait=10", 10), ("WAIT = 3", 3),
    ("wait=100000", 0), ("wait=600", 60), ("handling=strict; wait=2", 2), ("await=5", 0),
    ("wait=soon", 0), ("wait=\"7\"", 7), ("x" * 300 + ", wait=5", 0)])
def test_prefer_wait(header, seconds):
    assert prefer_wait(header) == seconds
