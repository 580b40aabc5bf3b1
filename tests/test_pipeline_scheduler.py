"""FrameScheduler: one frame per camera at a time, round-robin, end markers, waking workers."""

from __future__ import annotations

import threading
import time

import numpy as np

from streamd.pipeline.scheduler import FrameScheduler
from streamd.sources.queues import END, FrameQueue
from streamd.types import Frame

IMAGE = np.zeros((8, 8, 3), np.uint8)


def frame(camera: str, seq: int) -> Frame:
    return Frame(camera, seq, seq * 0.2, 1000.0 + seq * 0.2, IMAGE)


def scheduler_with(*cameras: str, size: int = 8) -> tuple[FrameScheduler, dict[str, FrameQueue]]:
    sched = FrameScheduler()
    queues = {c: FrameQueue(size, wakeup=sched.wakeup) for c in cameras}
    for name, queue in queues.items():
        sched.add(name, queue)
    return sched, queues


def test_a_camera_is_claimed_by_one_worker_at_a_time() -> None:
    # given two queued frames of one camera
    sched, queues = scheduler_with("a")
    queues["a"].put(frame("a", 0))
    queues["a"].put(frame("a", 1))
    # when a first worker claims it, then a second asks
    first = sched.claim(4, timeout=0.1)
    second = sched.claim(4, timeout=0.1)
    sched.release(first)
    third = sched.claim(4, timeout=0.1)
    # then the second gets nothing while the camera is busy, and the next frame comes after the release
    assert [c.item.seq for c in first] == [0]
    assert second == []
    assert [c.item.seq for c in third] == [1]


def test_claims_take_one_frame_of_each_idle_camera_up_to_the_batch_size() -> None:
    # given three cameras with two frames each
    sched, queues = scheduler_with("a", "b", "c")
    for name, queue in queues.items():
        queue.put(frame(name, 0))
        queue.put(frame(name, 1))
    # when a worker claims a batch of two, and another worker a batch of two
    batch1 = sched.claim(2, timeout=0.1)
    batch2 = sched.claim(2, timeout=0.1)
    # then the batches hold different cameras, one frame each
    assert sorted(c.camera for c in batch1) == ["a", "b"]
    assert [c.camera for c in batch2] == ["c"]


def test_cameras_are_served_round_robin() -> None:
    # given three cameras that always have a frame waiting
    sched, queues = scheduler_with("a", "b", "c", size=20)
    for name, queue in queues.items():
        for k in range(5):
            queue.put(frame(name, k))
    # when one worker claims one frame at a time six times
    order = []
    for _ in range(6):
        claims = sched.claim(1, timeout=0.1)
        order += [c.camera for c in claims]
        sched.release(claims)
    # then every camera gets its turn in order
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_claim_waits_for_a_frame_and_wakes_when_one_is_put() -> None:
    # given an empty camera and a frame put from another thread after 0.2 s
    sched, queues = scheduler_with("a")
    timer = threading.Timer(0.2, lambda: queues["a"].put(frame("a", 0)))
    timer.start()
    # when a worker waits up to 5 s
    started = time.monotonic()
    claims = sched.claim(1, timeout=5.0)
    waited = time.monotonic() - started
    # then it got the frame soon after it was put
    assert [c.item.seq for c in claims] == [0]
    assert waited < 2.0


def test_claim_gives_up_after_its_timeout_or_when_stopped() -> None:
    # given no frames
    sched, _ = scheduler_with("a")
    stop = threading.Event()
    stop.set()
    # when claiming
    assert sched.claim(1, timeout=0.05) == []
    assert sched.claim(1, timeout=60.0, stop=stop) == []


def test_an_ended_camera_gives_its_frames_then_the_end_marker_and_is_forgotten() -> None:
    # given a camera whose queue got a frame and was then closed (its source ended)
    sched, queues = scheduler_with("a", "b")
    queues["a"].put(frame("a", 0))
    queues["a"].close()
    # when claims are made and released
    first = sched.claim(1, timeout=0.1)
    sched.release(first)
    second = sched.claim(1, timeout=0.1)
    assert second[0].ended and second[0].item is END
    drained_before_release = sched.wait_drained(0.05)
    sched.release(second)
    # then the camera is gone, the other camera stays
    assert [c.item.seq for c in first] == [0]
    assert not drained_before_release
    assert sched.cameras() == ["b"]
    assert sched.wait_gone("a", 0.1)


def test_wait_drained_answers_once_every_camera_ended() -> None:
    # given two closed queues
    sched, queues = scheduler_with("a", "b")
    for queue in queues.values():
        queue.close()
    # when a worker takes both end markers in another thread
    def work() -> None:
        claims = sched.claim(2, timeout=1.0)
        sched.release(claims)

    worker = threading.Thread(target=work)
    worker.start()
    drained = sched.wait_drained(5.0)
    worker.join()
    # then
    assert drained
    assert sched.cameras() == []


def test_discard_forgets_a_camera_with_frames_left() -> None:
    # given a camera with queued frames
    sched, queues = scheduler_with("a")
    queues["a"].put(frame("a", 0))
    # when it is discarded
    sched.discard("a")
    # then nothing is claimed from it any more
    assert sched.claim(1, timeout=0.05) == []
    assert sched.pending() == 0


def test_a_claim_takes_only_its_share_of_the_ready_cameras() -> None:
    # given two workers and four cameras with a frame each
    sched = FrameScheduler(workers=2)
    queues = {c: FrameQueue(4, wakeup=sched.wakeup) for c in "abcd"}
    for name, queue in queues.items():
        sched.add(name, queue)
        queue.put(frame(name, 0))
    # when both workers claim batches of up to four
    first = sched.claim(4, timeout=0.1)
    second = sched.claim(4, timeout=0.1)
    # then each gets two cameras, so both work in parallel
    assert len(first) == 2 and len(second) == 2
    assert {c.camera for c in first + second} == set("abcd")
