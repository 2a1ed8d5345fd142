"""GracefulStop without Ray: real signals to this process, a recorded exit instead of
os._exit, and hard_exit's process sweep on real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tilemore.cli.graceful import GracefulStop, descendants
from tilemore.errors import TilemoreError
from tilemore.settings import Settings


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.exits: list[tuple[int, float]] = []
        self.exited = threading.Event()

    def echo(self, line: str) -> None:
        self.lines.append(line)

    def exit(self, code: int) -> None:
        self.exits.append((code, time.monotonic()))
        self.exited.set()


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def make(rec):
    made: list[GracefulStop] = []

    def make(grace: float, **kw) -> GracefulStop:
        stop = GracefulStop(grace, echo=rec.echo, exit=rec.exit, **kw)
        stop.install()
        made.append(stop)
        return stop

    yield make
    for stop in made:
        stop.uninstall()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_wakes_the_main_thread_and_done_stands_the_watchdog_down(make, rec, sig):
    stop = make(0.5)
    assert stop.wait(0.05) is None and not stop.requested.is_set()
    os.kill(os.getpid(), sig)  # SIGINT raises no KeyboardInterrupt: it is ours now
    assert stop.wait(5) is sig
    assert 0 < stop.remaining() <= 0.5 - stop.margin
    stop.done()
    time.sleep(0.7)  # past the grace
    assert rec.exits == [] and rec.lines == []


def test_past_the_grace_it_says_what_is_left_and_exits_0_in_time(make, rec):
    stop = make(0.8, last_words=lambda: rec.echo("3 threads in flight"))
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5) is signal.SIGTERM
    assert rec.exited.wait(5)
    (code, at), = rec.exits
    assert code == 0
    assert 0.8 - stop.margin - 0.05 <= at - stop.started_at <= 0.8  # within the grace
    assert rec.lines == ["not stopped within 0.8 s: exiting now", "3 threads in flight"]


def test_last_words_that_hang_do_not_hold_the_exit(make, rec):
    never = threading.Event()
    stop = make(2.0, last_words=never.wait)
    stop.request()
    assert rec.exited.wait(5)
    assert 1.95 <= rec.exits[0][1] - stop.started_at <= 2.0 + 0.25  # the margin, no more


def test_last_words_that_fail_do_not_stop_the_exit(make, rec):
    def broken() -> None:
        raise OSError("database unreachable")

    stop = make(0.4, last_words=broken)
    stop.request()
    assert rec.exited.wait(5) and rec.exits[0][0] == 0
    assert "(could not say what is left: database unreachable)" in rec.lines


def test_a_second_signal_exits_at_once(make, rec):
    stop = make(30.0)
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.wait(5) is signal.SIGINT
    os.kill(os.getpid(), signal.SIGINT)  # an impatient second Ctrl-C
    assert rec.exited.wait(5)
    assert rec.exits[0][1] - stop.started_at < 2
    assert rec.lines == ["SIGINT again: stopping now"]


def test_abandon_hands_over_to_the_watchdog(make, rec):
    stop = make(30.0, last_words=lambda: rec.echo("left: 1"))
    stop.request()
    stop.wait(5)
    stop.abandon()  # returns here only because the recorded exit does
    assert rec.exits[0][0] == 0 and rec.lines == ["left: 1"]


def test_uninstall_puts_the_previous_handlers_back():
    def mine(signum, frame) -> None:
        pass

    before = signal.signal(signal.SIGTERM, mine)
    interrupt = signal.getsignal(signal.SIGINT)  # ignored where the run is in the background
    try:
        stop = GracefulStop(5, exit=lambda code: None)
        stop.install()
        assert signal.getsignal(signal.SIGTERM) == stop._on_signal
        assert signal.getsignal(signal.SIGINT) == stop._on_signal
        stop.uninstall()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGTERM, before)


def test_descendants_finds_grandchildren_and_hard_exit_kills_them(tmp_path):
    """hard_exit in a child process: it SIGKILLs its own child and grandchild (as it does
    Ray's processes, which a killed raylet leaves behind), then exits 0."""
    script = tmp_path / "tree.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from tilemore.cli.graceful import descendants, hard_exit\n"
        "import os\n"
        "child = subprocess.Popen(['sh', '-c', 'sleep 60 & sleep 60; true'])\n"
        "time.sleep(0.5)\n"
        "found = descendants(os.getpid())\n"
        "print(' '.join(map(str, found)), flush=True)\n"
        "hard_exit(0)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 3  # sh, and its two sleeps
    deadline = time.monotonic() + 5
    while (alive := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive


def test_descendants_of_a_process_without_children_is_empty():
    with subprocess.Popen(["sleep", "5"]) as child:
        try:
            assert descendants(child.pid) == []
            assert child.pid in descendants(os.getpid())
        finally:
            child.kill()


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_grace_setting_is_bounded():
    assert Settings.from_env({}).shutdown_grace_seconds == 20  # under Kubernetes' 30 s
    got = Settings.from_env({"TILEMORE_SHUTDOWN_GRACE_SECONDS": "7.5"})
    assert got.shutdown_grace_seconds == 7.5
    for bad in ("0", "1e9", "soon"):
        with pytest.raises(TilemoreError) as err:
            Settings.from_env({"TILEMORE_SHUTDOWN_GRACE_SECONDS": bad})
        assert err.value.code == "invalid_setting"
