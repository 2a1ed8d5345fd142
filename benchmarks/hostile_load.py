"""Legitimate throughput under attack: small images through the thumbnail pipeline by a
funded domain, while one submission in ten is an unpaid attack of issue 13 (huge-number
parameters, a decompression bomb, an oversized envelope or meta, a huge output, a slow or
half-sent upload) from a zero-credit sub-account; against the same load without attacks,
in the same run. Target: hostile / quiet ≥ 0.9 (medians of threads done per second). Also
reported: the median of each round pair's ratio, and the service process's CPU time per
legitimate thread, attacks included (its capacity under attack: steadier than wall time on a
machine shared with other work), and per attack of each kind.

The service is the real HTTP service in a child process (uvicorn, SQLite, local blobs, the
conductor on threads: ``tests/support/service_harness.py``), so the load generator does not share
its interpreter. Rounds alternate (quiet, hostile, hostile, quiet, …) so drift in the
machine's load hits both alike; each submits fresh images (the same image would be a replay)
from ``--clients`` closed-loop clients (submit, then poll every 0.1 s until done) and is
timed from the first submission to the last done. Attacks go out from their own process, so a
slow upload holds an attacker thread, not a legitimate client; /healthz is polled throughout.

    python benchmarks/hostile_load.py [--submissions 300] [--clients 8] [--rounds 5]
    python benchmarks/hostile_load.py --smoke        # tiny load, one round each: seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (
    arguments,
    commit,
    finish,
    machine,
    parse,
    photo_jpeg,
    positive,
    process_cpu,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support import attacks  # noqa: E402
from support.attacks import Answer, HealthPoller, auth, multipart, send, sha256  # noqa: E402
from support.waits import close_child  # noqa: E402

PIPELINE = "thumbnail"
ENV = {"adjustments": {"shifter": {"resize": {"width": 128}}}, "pipeline": PIPELINE}
SIZE = (256, 192)
ATTACK_EVERY = 10  # one submission in ten is an attack
POLL = 0.1  # seconds between a client's status reads
# The child service's upload deadlines (smaller than the defaults, so that slow uploads are
# cut off within a round).
IDLE, GRACE = 2.0, 2.0


# -- the service, in a child process -------------------------------------------------------


def serve(root: Path) -> None:
    """Run the service until stdin closes; print its URL and tokens as one JSON line."""
    from support.service_harness import Service

    svc = Service(root, credits="1000000", upload_idle_seconds=IDLE,
                  upload_grace_seconds=GRACE, max_meta_bytes=4096)
    svc.store.create_subaccount("acme", "broke")  # no credits: the attackers'
    _, broke = svc.store.issue_token("acme", "acme/broke")
    print(json.dumps({"url": svc.url, "token": svc.token, "broke": broke}), flush=True)
    try:
        sys.stdin.read()
    finally:
        svc.close()


class Child:
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(root)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the service did not start")
        info = json.loads(line)
        self.url = info["url"]
        self.legit = auth(info["token"], "acme")
        self.broke_token = info["broke"]

    def cpu_seconds(self) -> float:
        """The service process's CPU time so far (user + system, all its threads)."""
        return process_cpu(self.proc.pid)[1]  # type: ignore[index]

    def close(self) -> None:
        close_child(self.proc)


# -- legitimate work and attacks -----------------------------------------------------------


def submit_and_wait(url: str, headers: dict[str, str], image: bytes) -> None:
    body, ctype = multipart(ENV, image)
    answer = send(url, "POST", f"/shop/submitted/{sha256(image)}/", body,
                  {**headers, "Content-Type": ctype}, timeout=120)
    if answer.status not in (200, 202):
        raise RuntimeError(f"a legitimate submission got {answer.status}: {answer.body[:200]}")
    thread = json.loads(answer.body)
    while thread["status"] == "processing":
        time.sleep(POLL)
        thread = json.loads(send(url, "GET", f"/threads/{thread['thread_id']}", b"",
                                 headers, timeout=120).body)
    if thread["status"] != "done":
        raise RuntimeError(f"a legitimate thread ended {thread['status']}")


def attack_kinds(url: str, headers: dict[str, str]) -> dict[str, Callable[[], Answer | None]]:
    """Issue 13's unpaid attacks 1, 2, 6, 7 and 8, each one request, with what it must get."""
    tiny = photo_jpeg(96, 72, seed=999_999)
    numbers = attacks.huge_number_envelopes(PIPELINE)
    bomb = attacks.png_bomb()

    def post(envelope: dict | bytes, image: bytes = tiny) -> Answer:
        body, ctype = multipart(envelope, image)
        return send(url, "POST", f"/attack/submitted/{sha256(image)}/", body,
                    {**headers, "Content-Type": ctype}, timeout=120)

    def half_sent() -> Answer | None:
        upload = next(attacks.half_sent(url, headers, tiny, ENV, 1))
        try:
            return upload.answer()
        finally:
            upload.close()

    return {
        "aspect_exponent": lambda: post(numbers["aspect_exponent"]),
        "width_5000_digits": lambda: post(numbers["width_5000_digits"]),
        "bomb": lambda: post({"adjustments": {}, "pipeline": PIPELINE}, bomb),
        "big_envelope": lambda: post(attacks.big_envelope(100_000, PIPELINE)),
        "big_meta": lambda: post(attacks.big_meta(32_000, PIPELINE)),
        "huge_output": lambda: post(attacks.huge_output(60_000, PIPELINE)),
        "slow_upload": lambda: attacks.slow_upload(url, headers, tiny, ENV, 1024),
        "half_sent": half_sent,
    }


EXPECTED = {"aspect_exponent": 422, "width_5000_digits": 400, "bomb": 402,
            "big_envelope": 413, "big_meta": 413, "huge_output": 413, "slow_upload": 408,
            "half_sent": 408}


def attack_forever(url: str, token: str, skip: list[str]) -> None:
    """The attacker process: runs each attack named on stdin on its own thread and prints
    (name, status, seconds) as JSON lines; ``END`` waits for those under way and prints
    ``DONE``. Its own process, so that its threads (a slow upload drips for seconds) do not
    take the legitimate clients' interpreter."""
    kinds = {n: a for n, a in attack_kinds(url, auth(token, "acme")).items() if n not in skip}
    print("READY", flush=True)
    pool, lock, pending = ThreadPoolExecutor(max_workers=64), threading.Lock(), []

    def run(name: str) -> None:
        started = time.monotonic()
        answer = kinds[name]()
        with lock:
            print(json.dumps([name, answer and answer.status, time.monotonic() - started]),
                  flush=True)

    for line in sys.stdin:
        name = line.strip()
        if name == "END":
            for future in pending:
                future.result()
            pending.clear()
            with lock:
                print("DONE", flush=True)
        elif name in kinds:
            pending.append(pool.submit(run, name))


class Attacker:
    def __init__(self, url: str, broke: str, skip: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--attack", url, "--token", broke,
             *(f"--skip={k}" for k in skip)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "READY":  # type: ignore[union-attr]
            raise RuntimeError("the attacker did not start")
        self.names = itertools.cycle(sorted(set(EXPECTED) - set(skip)))
        self.lock = threading.Lock()

    def fire(self, name: str | None = None) -> None:
        """The next attack in turn, or ``name``."""
        with self.lock:
            self.proc.stdin.write((name or next(self.names)) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]

    def finish(self) -> list[tuple[str, int | None, float]]:
        """Wait for the attacks under way: their outcomes since the last call."""
        with self.lock:
            self.proc.stdin.write("END\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        outcomes = []
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.strip() == "DONE":
                break
            outcomes.append(tuple(json.loads(line)))
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        close_child(self.proc)


def run_round(child: Child, attacker: Attacker, images: list[bytes], clients: int,
              hostile: bool) -> dict:
    submitted = itertools.count(1)

    def legit(image: bytes) -> None:
        if hostile and next(submitted) % (ATTACK_EVERY - 1) == 0:  # 9 legit, then 1 attack
            attacker.fire()
        submit_and_wait(child.url, child.legit, image)

    with HealthPoller(child.url, every=0.1) as health:
        cpu, started = child.cpu_seconds(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(legit, images))
        seconds = time.perf_counter() - started
        outcomes = attacker.finish()  # the attacks' whole cost is in the round's CPU time
        cpu = child.cpu_seconds() - cpu
    return {"hostile": hostile, "seconds": seconds, "threads": len(images),
            "per_second": len(images) / seconds, "service_cpu_s": cpu,
            "cpu_ms_per_thread": cpu / len(images) * 1000, "attacks": len(outcomes),
            "attack_outcomes": outcomes, "healthz_worst_s": health.worst}


def cpu_per_attack(child: Child, attacker: Attacker, names: list[str],
                   repeat: int) -> tuple[dict[str, float], list]:
    """The service's CPU time per attack of each kind (ms), ``repeat`` sent at once and the
    service otherwise idle: what each costs it, beside the throughput figures (and their
    answers, checked with the rest)."""
    out, outcomes = {}, []
    for name in names:
        cpu = child.cpu_seconds()
        for _ in range(repeat):
            attacker.fire(name)
        outcomes += attacker.finish()
        out[name] = (child.cpu_seconds() - cpu) / repeat * 1000
    return out, outcomes


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--submissions", type=int, default=300, help="legitimate, per round")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each kind")
    ap.add_argument("--skip", action="append", default=[], choices=sorted(EXPECTED),
                    help="leave this attack out (to see what each costs)")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--attack", help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    args = parse(ap, submissions=20, rounds=1, clients=4)
    if args.serve:
        serve(args.serve)
        return
    if args.attack:
        attack_forever(args.attack, args.token, args.skip)
        return
    measured_at = commit()  # before the service imports the code
    child = Child(Path(tempfile.mkdtemp(prefix="tilemore-hostile-")))
    rounds: list[dict] = []
    attacker = None
    try:
        attacker = Attacker(child.url, child.broke_token, args.skip)
        seeds = itertools.count()
        fresh = lambda n: [photo_jpeg(*SIZE, seed=next(seeds)) for _ in range(n)]  # noqa: E731
        run_round(child, attacker, fresh(min(8, args.submissions)), args.clients, False)
        for r in range(args.rounds):
            for hostile in ((False, True) if r % 2 == 0 else (True, False)):
                result = run_round(child, attacker, fresh(args.submissions), args.clients,
                                   hostile)
                rounds.append(result)
                print(f"  round {r + 1} {'hostile' if hostile else 'quiet  '}: "
                      f"{result['per_second']:.2f} threads/s ({result['seconds']:.1f} s, "
                      f"{result['cpu_ms_per_thread']:.1f} ms CPU each, "
                      f"{result['attacks']} attacks, /healthz worst "
                      f"{result['healthz_worst_s'] * 1000:.0f} ms)", flush=True)
        names = sorted(set(EXPECTED) - set(args.skip))
        attack_cpu, probes = cpu_per_attack(child, attacker, names, 2 if args.smoke else 20)
    finally:
        if attacker is not None:
            attacker.close()
        child.close()
    quiet = statistics.median(r["per_second"] for r in rounds if not r["hostile"])
    hostile = statistics.median(r["per_second"] for r in rounds if r["hostile"])
    # The service's CPU per legitimate thread, attacks included: what the attacks cost in
    # capacity, much less sensitive than wall time to other work on a shared machine.
    cpu_quiet = statistics.median(r["cpu_ms_per_thread"] for r in rounds if not r["hostile"])
    cpu_hostile = statistics.median(r["cpu_ms_per_thread"] for r in rounds if r["hostile"])
    # Each round's pair (quiet and hostile back to back): drift between pairs cancels.
    paired = statistics.median(
        (b if b["hostile"] else a)["per_second"] / (a if b["hostile"] else b)["per_second"]
        for a, b in zip(rounds[::2], rounds[1::2], strict=True))
    outcomes = [o for r in rounds for o in r.pop("attack_outcomes")] + probes
    by_kind = {name: {"count": sum(1 for o in outcomes if o[0] == name),
                      "service_cpu_ms_each": attack_cpu[name],
                      "statuses": dict(Counter(str(o[1]) for o in outcomes if o[0] == name)),
                      "expected": EXPECTED[name],
                      "worst_s": max((o[2] for o in outcomes if o[0] == name), default=None)}
               for name in sorted(EXPECTED) if name not in args.skip}
    wrong = {n: k["statuses"] for n, k in by_kind.items()
             if set(k["statuses"]) - {str(k["expected"])}}
    result = {"commit": measured_at, "machine": machine(),
              "pipeline": PIPELINE, "size": f"{SIZE[0]}x{SIZE[1]}", "clients": args.clients,
              "submissions_per_round": args.submissions, "attack_every": ATTACK_EVERY,
              "skipped": args.skip,
              "rounds": rounds, "quiet_per_second": quiet, "hostile_per_second": hostile,
              "ratio": hostile / quiet, "paired_ratio_median": paired,
              "cpu_ms_per_thread_quiet": cpu_quiet,
              "cpu_ms_per_thread_hostile": cpu_hostile,
              "capacity_ratio": cpu_quiet / cpu_hostile, "attacks": by_kind,
              "unexpected_answers": wrong,
              "healthz_worst_s": max(r["healthz_worst_s"] for r in rounds)}
    checks = {f"{n} answered {st}, expected {EXPECTED[n]}": False for n, st in wrong.items()}
    checks["throughputs are positive"] = positive(quiet, hostile, cpu_quiet, cpu_hostile)
    checks["every round had its attacks"] = all(r["attacks"] > 0 for r in rounds
                                                if r["hostile"])
    print(f"{args.submissions} legitimate submissions × {args.rounds} rounds each, "
          f"{args.clients} clients, {PIPELINE} at {SIZE[0]}x{SIZE[1]}, on {machine()}")
    print(f"  quiet: {quiet:.2f} threads/s; hostile (1 in {ATTACK_EVERY} an attack): "
          f"{hostile:.2f} threads/s; ratio {hostile / quiet:.3f} (target ≥ 0.9); median of "
          f"the rounds' pairs {paired:.3f}")
    print(f"  service CPU per legitimate thread: quiet {cpu_quiet:.1f} ms; hostile "
          f"{cpu_hostile:.1f} ms (attacks included); capacity ratio "
          f"{cpu_quiet / cpu_hostile:.3f}")
    print("  service CPU per attack (ms): " + ", ".join(
        f"{n} {k['service_cpu_ms_each']:.1f}" for n, k in by_kind.items()))
    print(f"  attacks: {sum(k['count'] for k in by_kind.values())}, answers as expected: "
          f"{'yes' if not wrong else wrong}; /healthz worst "
          f"{result['healthz_worst_s'] * 1000:.0f} ms")
    print(f"  figures: {finish('hostile_load', args, result, checks)}")


if __name__ == "__main__":
    main()
