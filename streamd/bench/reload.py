"""`streamd bench reload`: how long an index reload takes and how much it stalls frame processing.

For each index type and size, a library of random unit vectors (5 per label) is built once into
a cache directory (the build time is reported; HNSW32 at 1M takes many minutes to build, so the
cache is reused by later runs). Then:

* reload: ``IndexReloader.check()`` after the files' modification time changed, i.e. what the
  daemon does after a save: read both files, validate them (ids agree, dimension, fingerprint)
  and swap the library into the ``IndexHolder``. Median and max of at least ``--reloads`` runs,
  more until the reloads have run for ``--min-busy-s`` (so that a p99 of small, fast indexes
  rests on enough frame-loop iterations).
* stall: a "frame loop" thread searches ``holder.get()`` for one vector (top 5) every
  ``--period-ms``, as the recognition loop does once per sample. Each iteration's time runs from
  when it was due to when its search returned, so time spent waiting for the interpreter (a load
  holding the GIL) counts. p99 and max are reported for a window with the reloads running in
  another thread (at the reloader's priority) and for a window as long without reloads; the
  stall is the difference (reloading minus idle).
* ``--label-listener`` also subscribes to label changes (``notify.on_label_change``) as the
  daemon does for its trackers, so that each swap computes the new label set in the reloading
  thread, as in the daemon.

Figures depend on the machine's load: the load average is printed with them.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from streamd.bench.index import _count, unit_vectors

FINGERPRINT = "bench-reload:random-unit-vectors"
VECTORS_PER_LABEL = 5


def parse_count(text: str) -> int:
    """'1k' -> 1000, '1M' -> 1000000, '2500' -> 2500."""
    text = text.strip()
    scale = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a count like 1000, 1k or 1M") from None
    if value < 1:
        raise click.BadParameter(f"{text!r}: a size must be at least 1")
    return value


def cached_library(cache_dir: Path, index_type: str, n: int, dim: int, seed: int) -> tuple[Path, float | None]:
    """The index directory for (type, n, dim), built when missing; returns it and the build seconds (None: cached)."""
    from streamd.index.library import FeatureLibrary

    target = cache_dir / f"{index_type}-{n}x{dim}-seed{seed}"
    if (target / "vector.index").exists() and (target / "id_map.yaml").exists():
        return target, None
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, n, dim)
    labels = [f"person-{i // VECTORS_PER_LABEL}" for i in range(n)]
    started = time.perf_counter()
    lib = FeatureLibrary.create(dim, index_type=index_type, fingerprint=FINGERPRINT)  # type: ignore[arg-type]
    lib.add(vectors, labels)
    seconds = time.perf_counter() - started
    lib.save(target)
    return target, seconds


class FrameLoop(threading.Thread):
    """Searches the holder's library every ``period_s``; records each iteration's time since it was due."""

    def __init__(self, holder, query: np.ndarray, period_s: float, *, threads: int = 1, topk: int = 5) -> None:
        super().__init__(name="bench-frame-loop", daemon=True)
        self.holder, self.query, self.period_s, self.topk = holder, query, period_s, topk
        self.threads = threads
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._iterations: list[float] = []
        self._searches: list[float] = []
        self.errors = 0

    def run(self) -> None:
        import faiss

        # OpenMP's thread count is per calling thread: set it here, not in the thread that started us
        # (a one-vector search on 2 OpenMP threads costs ~10 ms on a busy 2-core box, 0.03 ms on one).
        faiss.omp_set_num_threads(self.threads)
        due = time.perf_counter()
        while not self.stop_event.is_set():
            started = time.perf_counter()
            try:
                self.holder.get().search(self.query, self.topk)
            except Exception:  # counted: a failed search is a lost sample
                self.errors += 1
            done = time.perf_counter()
            with self._lock:
                self._iterations.append(done - due)
                self._searches.append(done - started)
            due += self.period_s
            pause = due - time.perf_counter()
            if pause > 0:
                self.stop_event.wait(pause)
            else:
                due = time.perf_counter()  # fell behind: start again from now, do not burst

    def take(self) -> tuple[list[float], list[float]]:
        """Iteration and search times (s) since the last take."""
        with self._lock:
            out = (self._iterations, self._searches)
            self._iterations, self._searches = [], []
        return out


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


@dataclass
class Trial:
    """What one index's reloads measured (times in s unless named _ms)."""

    reload_ms: list[float]
    search_ms: float  # median search without reloads
    idle: list[float]  # frame-loop iterations without reloads
    busy: list[float]  # ... while reloading
    idle_wait: list[float]  # the part of each iteration before its search started (sleep overshoot, GIL)
    busy_wait: list[float]
    errors: int


@dataclass
class Row:
    index_type: str
    n: int
    build_s: float | None
    file_mb: float
    trial: Trial


def bench_one(
    index_dir: Path, dim: int, reloads: int, period_s: float, seed: int, threads: int, quiet_s: float,
    *, min_busy_s: float = 0.0, label_listener: bool = False,
) -> Trial:
    """Reload ``index_dir`` under a running frame loop (``reloads`` times, more until ``min_busy_s``
    have passed) and measure the loop then and for as long without reloads."""
    from streamd.index.holder import IndexHolder
    from streamd.index.notify import on_label_change
    from streamd.index.reload import IndexReloader

    holder = IndexHolder()
    reloader = IndexReloader(index_dir, holder, expected_dim=dim, expected_fingerprint=FINGERPRINT, debounce_s=0)
    if reloader.check().result != "ok":
        raise click.ClickException(f"{index_dir}: the cached index did not load: {reloader.last_outcome}")
    if label_listener:
        on_label_change(holder, lambda change: None)
    query = unit_vectors(np.random.default_rng(seed + 1), 1, dim)
    loop = FrameLoop(holder, query, period_s, threads=threads)
    loop.start()
    try:
        time.sleep(0.2)  # warm up
        loop.take()
        busy_started = time.perf_counter()
        times = _reload_in_thread(reloader, index_dir, reloads, min_busy_s)
        busy, busy_searches = loop.take()
        time.sleep(max(quiet_s, time.perf_counter() - busy_started))  # at least as long as the reloads took
        idle, searches = loop.take()
    finally:
        loop.stop_event.set()
        loop.join(10)
    return Trial(
        times, statistics.median(searches) * 1000.0, idle, busy,
        [i - s for i, s in zip(idle, searches)], [i - s for i, s in zip(busy, busy_searches)], loop.errors,
    )


def _reload_in_thread(reloader, index_dir: Path, reloads: int, min_busy_s: float = 0.0) -> list[float]:
    """Timed reloads (ms) from a thread at the reloader's priority, as in the daemon: ``reloads``
    of them, and more until ``min_busy_s`` have passed."""
    from streamd.index.reload import RELOAD_NICE
    from streamd.index.watch import lower_thread_priority

    times: list[float] = []
    failures: list[str] = []

    def work() -> None:
        lower_thread_priority(RELOAD_NICE)
        began = time.perf_counter()
        while len(times) < reloads or time.perf_counter() - began < min_busy_s:
            now = time.time()
            os.utime(index_dir / "vector.index", (now, now))  # a new signature: the reloader loads again
            started = time.perf_counter()
            outcome = reloader.check()
            times.append((time.perf_counter() - started) * 1000.0)
            if outcome.result != "ok":
                failures.append(f"{index_dir}: reload gave {outcome.result}: {outcome.error}")
                return
            time.sleep(0.05)  # let the loop run on the new generation before the next one

    thread = threading.Thread(target=work, name="bench-reload")
    thread.start()
    thread.join()
    if failures:
        raise click.ClickException(failures[0])
    return times


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamd" / "bench-reload"


@click.command("reload")
@click.option("--sizes", default="1k,100k,1M", show_default=True, help="Comma-separated gallery sizes (1k, 100k, 1M, 2500).")
@click.option("--types", default="Flat,HNSW32", show_default=True, help="Comma-separated index types.")
@click.option("--dim", default=128, show_default=True, help="Feature dimension.")
@click.option("--reloads", default=5, show_default=True, help="Reloads timed per index at least (median and max reported).")
@click.option(
    "--min-busy-s", default=3.0, show_default=True,
    help="Keep reloading until this long has passed (more frame-loop iterations for the p99 of fast reloads).",
)
@click.option("--period-ms", default=10.0, show_default=True, help="Frame loop period: one search of the serving index each.")
@click.option("--threads", default=1, show_default=True, help="faiss threads for searching (building uses all cores).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the built indexes are kept between runs. Default: $XDG_CACHE_HOME/streamd/bench-reload.",
)
@click.option("--quiet-s", default=2.0, show_default=True, help="Shortest frame-loop window without reloads (s).")
@click.option("--seed", default=0, show_default=True, help="Random seed of the vectors.")
@click.option(
    "--label-listener/--no-label-listener", default=False, show_default=True,
    help="Subscribe to label changes as the daemon's trackers do (each swap then computes the label set).",
)
def command(
    sizes: str, types: str, dim: int, reloads: int, min_busy_s: float, period_ms: float, threads: int,
    cache_dir: Path | None, quiet_s: float, seed: int, label_listener: bool,
) -> None:
    """Index reload time (load + validate + swap) and the stall it causes in a concurrent frame loop."""
    import faiss

    counts = [parse_count(s) for s in sizes.split(",") if s.strip()]
    kinds = [t.strip() for t in types.split(",") if t.strip()]
    cache = cache_dir or _default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    click.echo(
        f"streamd bench reload: {dim}-d random unit vectors ({VECTORS_PER_LABEL} per label), at least {reloads} reloads "
        f"and {min_busy_s:g} s of reloading each, frame loop every {period_ms:g} ms searching top-5 with {threads} faiss "
        f"thread(s){', label-change listener' if label_listener else ''}; cache {cache}"
    )
    click.echo(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} CPUs")
    rows: list[Row] = []
    for kind in kinds:
        for n in counts:
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            index_dir, build_s = cached_library(cache, kind, n, dim, seed)
            size = sum(f.stat().st_size for f in index_dir.iterdir()) / 1e6
            trial = bench_one(
                index_dir, dim, reloads, period_ms / 1000.0, seed, threads, quiet_s,
                min_busy_s=min_busy_s, label_listener=label_listener,
            )
            rows.append(Row(kind, n, build_s, size, trial))
            _print_row(rows[-1], header=len(rows) == 1)
    load_after = os.getloadavg()
    click.echo(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    click.echo(
        "reload = IndexReloader.check(): read + validate + swap (ms; n = how many); loop = frame-loop iteration from "
        "due time to search done (ms), without reloads (idle) and while reloading; stall = reloading - idle; "
        "wait = the part of an iteration before its search started (waiting for the CPU or the GIL), p99 idle > "
        "reloading; build = once into the cache ('cached' = reused)"
    )


def _print_row(row: Row, *, header: bool) -> None:
    if header:
        click.echo(
            f"{'type':<7} {'vectors':>7} {'build s':>8} {'MB':>6} {'n':>4} {'reload ms':>10} {'max':>7} {'search':>7} "
            f"{'idle p99':>9} {'idle max':>9} {'reload p99':>11} {'reload max':>11} {'stall p99':>10} {'stall max':>10} "
            f"{'wait p99':>11} {'errors':>6}"
        )
    t = row.trial
    build = "cached" if row.build_s is None else f"{row.build_s:.1f}"
    idle, busy = _ms(t.idle), _ms(t.busy)
    idle_max, busy_max = max(idle, default=float("nan")), max(busy, default=float("nan"))
    wait = f"{_p99(_ms(t.idle_wait)):.1f}>{_p99(_ms(t.busy_wait)):.1f}"
    click.echo(
        f"{row.index_type:<7} {_count(row.n):>7} {build:>8} {row.file_mb:>6.0f} {len(t.reload_ms):>4} "
        f"{statistics.median(t.reload_ms):>10.1f} {max(t.reload_ms):>7.1f} {t.search_ms:>7.3f} "
        f"{_p99(idle):>9.1f} {idle_max:>9.1f} {_p99(busy):>11.1f} {busy_max:>11.1f} "
        f"{_p99(busy) - _p99(idle):>+10.1f} {busy_max - idle_max:>+10.1f} {wait:>11} {t.errors:>6}"
    )


def _ms(seconds: list[float]) -> list[float]:
    return [v * 1000.0 for v in seconds]
