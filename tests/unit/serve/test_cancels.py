"""The cancel board on its own (a plain object here; a Ray actor in Serve): what listeners see, and when
a post counts as done. Replicas posting to each other through the real actor: tests/integration/serve/
test_cancel_across_replicas.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from raygent.serve.cancels import CancelBoard


async def test_a_first_listen_gets_what_is_still_pending_not_what_is_settled() -> None:
    board = CancelBoard()
    assert await board.post("run_old", 0.01) is False  # nobody answered: withdrawn
    answered = asyncio.create_task(board.post("run_done", 5.0))
    waiting = asyncio.create_task(board.post("run_new", 5.0))
    await asyncio.sleep(0)
    await board.found("run_done")
    assert await answered is True
    # A listener starting now may already drive run_new (the post came while it was starting).
    epoch, seq, run_ids = await board.listen(None, 0, 5.0)
    assert (epoch, seq, run_ids) == (board.epoch, 3, ["run_new"])
    await board.found("run_new")
    assert await waiting is True


async def test_a_listener_gets_each_post_once_and_the_poster_hears_it_was_found() -> None:
    board = CancelBoard()
    epoch, seq, _ = await board.listen(None, 0, 0.01)
    waiting = asyncio.create_task(board.listen(epoch, seq, 5.0))
    await asyncio.sleep(0)
    poster = asyncio.create_task(board.post("run_a", 5.0))
    epoch, seq, run_ids = await asyncio.wait_for(waiting, 5.0)
    assert run_ids == ["run_a"] and seq == 1
    assert not poster.done()  # it waits for a replica to say it had the run
    await board.found("run_a")
    assert await asyncio.wait_for(poster, 5.0) is True
    # Nothing new: the next listen waits (here, its whole timeout) and returns nothing.
    assert await board.listen(epoch, seq, 0.05) == (epoch, 1, [])


async def test_a_post_nobody_answered_in_time_is_withdrawn() -> None:
    # The caller was told 409: a listener that reads the board late must not cancel the run after all.
    board = CancelBoard()
    epoch, seq, _ = await board.listen(None, 0, 0.01)
    assert await board.post("run_late", 0.01) is False
    assert await board.listen(epoch, seq, 0.01) == (epoch, 1, [])


async def test_a_listener_of_a_lost_board_reads_a_new_one_from_the_start() -> None:
    old, new = CancelBoard(), CancelBoard()
    epoch, seq, _ = await old.listen(None, 0, 0.01)
    poster = asyncio.create_task(new.post("run_b", 5.0))
    await asyncio.sleep(0)
    assert await new.listen(epoch, seq, 5.0) == (new.epoch, 1, ["run_b"])
    await new.found("run_b")
    assert await poster is True


def test_outside_ray_a_broadcast_does_nothing() -> None:
    # An ApiService outside Serve (in-process fleets, tests) must never start Ray by posting. In its own
    # process: this one may hold the integration tests' session Ray.
    script = """
import asyncio, ray
from raygent.serve.cancels import CancelBroadcast
from raygent.serve.inflight import InflightRuns

async def main():
    broadcast = CancelBroadcast("f", InflightRuns())
    broadcast.start()
    assert broadcast._task is None
    assert await broadcast.post("run_x") is False

asyncio.run(main())
assert not ray.is_initialized()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
