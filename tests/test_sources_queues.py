"""The bounded frame queue: never blocks the producer, counts every drop, ends with END."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamd.metrics import Metrics
from streamd.sources.queues import END, FrameQueue
from streamd.types import Frame


def _frame(seq: int, camera: str = "cam") -> Frame:
    return Frame(camera=camera, seq=seq, pts=seq / 5, captured_at=time.time(), image=np.zeros((4, 4, 3), np.uint8))


def _drops(metrics: Metrics, camera: str, reason: str) -> float:
    return metrics.registry.get_sample_value(
        "streamd_frames_dropped_total", {"camera": camera, "reason": reason}
    ) or 0.0


def test_drop_oldest_keeps_the_freshest_frames_and_counts_the_drops() -> None:
    # given
    metrics = Metrics()
    queue = FrameQueue(2, "drop_oldest", metrics)

    # when
    results = [queue.put(_frame(i)) for i in range(5)]

    # then
    assert results == [True] * 5
    assert [queue.get_nowait().seq, queue.get_nowait().seq] == [3, 4]  # type: ignore[union-attr]
    assert _drops(metrics, "cam", "queue_full") == 3
    assert queue.dropped[("cam", "queue_full")] == 3


def test_drop_newest_keeps_what_was_queued() -> None:
    # given
    metrics = Metrics()
    queue = FrameQueue(2, "drop_newest", metrics)

    # when
    results = [queue.put(_frame(i)) for i in range(5)]

    # then
    assert results == [True, True, False, False, False]
    assert [queue.get_nowait().seq, queue.get_nowait().seq] == [0, 1]  # type: ignore[union-attr]
    assert _drops(metrics, "cam", "queue_full") == 3


def test_drops_are_counted_per_camera_on_a_shared_queue() -> None:
    # given
    metrics = Metrics()
    queue = FrameQueue(1, "drop_oldest", metrics)

    # when
    for i in range(3):
        queue.put(_frame(i, "a"))
    queue.put(_frame(0, "b"))

    # then the frames lost are counted against their own camera (b's frame pushed out a's last one)
    assert _drops(metrics, "a", "queue_full") == 3
    assert _drops(metrics, "b", "queue_full") == 0
    assert queue.get_nowait().camera == "b"  # type: ignore[union-attr]


def test_put_never_blocks_even_when_nobody_reads() -> None:
    # given a full queue nobody consumes
    queue = FrameQueue(1)
    started = time.perf_counter()

    # when
    for i in range(2000):
        queue.put(_frame(i))

    # then (a bound far above the real cost, only to catch a blocking put)
    assert time.perf_counter() - started < 5.0
    assert len(queue) == 1


def test_close_is_the_end_marker_after_the_queued_frames() -> None:
    # given
    queue = FrameQueue(3)
    queue.put(_frame(1))

    # when
    queue.close()
    late = queue.put(_frame(2))

    # then
    assert queue.get(timeout=1).seq == 1  # type: ignore[union-attr]
    assert queue.get(timeout=1) is END
    assert queue.get(timeout=1) is END
    assert late is False
    assert queue.dropped[("cam", "closed")] == 1


def test_get_waits_for_a_frame_and_answers_none_after_the_timeout() -> None:
    # given
    queue = FrameQueue(2)
    threading.Timer(0.05, lambda: queue.put(_frame(7))).start()

    # when
    got = queue.get(timeout=5)
    nothing = queue.get(timeout=0.01)

    # then
    assert got is not None and got.seq == 7  # type: ignore[union-attr]
    assert nothing is None


def test_the_wakeup_event_lets_one_consumer_wait_on_many_queues() -> None:
    # given
    wakeup = threading.Event()
    queues = [FrameQueue(2, wakeup=wakeup) for _ in range(3)]

    # when
    queues[2].put(_frame(1, "c"))

    # then
    assert wakeup.is_set()
    assert [q.get_nowait() for q in queues][2].camera == "c"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, "drop_oldest"), "queue size must be >= 1, got 0"), ((2, "block"), "drop policy must be one of drop_oldest, drop_newest, got 'block'")],
)
def test_bad_queue_settings_are_refused(args: tuple, message: str) -> None:
    # given / when / then
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        FrameQueue(*args)


def test_put_wait_waits_for_room_for_batch_files_and_gives_up_on_stop() -> None:
    # given a full queue
    queue = FrameQueue(1)
    stop = threading.Event()
    queue.put(_frame(0))
    threading.Timer(0.05, queue.get_nowait).start()

    # when a batch reader waits for room, then waits again until stopped
    first = queue.put_wait(_frame(1), stop)
    threading.Timer(0.05, stop.set).start()
    second = queue.put_wait(_frame(2), stop)

    # then nothing was dropped for lack of room; the frame given up at stop counts as closed
    assert first is True and second is False
    assert queue.get_nowait().seq == 1  # type: ignore[union-attr]
    assert queue.dropped == {("cam", "closed"): 1}
