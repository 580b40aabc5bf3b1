"""`streamd bench index`: search, build, append and remove speed of the feature library.

Random unit vectors with a fixed seed stand in for face features; queries are gallery vectors
plus noise (cosine ~0.7 to their source, like a new photo of an enrolled person), and recall@1
is measured against exact (Flat) search. One thread, median of repeated runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

TARGET_QUERY_MS = {"Flat": 10.0, "HNSW32": 1.0}


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` random unit vectors of ``dim`` dimensions, float32."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def probes(rng: np.random.Generator, base: np.ndarray, n: int) -> np.ndarray:
    """Noisy copies of ``n`` base vectors, cosine ~0.7 to their source."""
    picked = base[rng.choice(len(base), size=n, replace=False)]
    noise = rng.standard_normal(picked.shape).astype(np.float32)
    noise *= 1.0 / np.linalg.norm(noise, axis=1, keepdims=True)
    mixed = picked + noise
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _median_ms(fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs; ``setup`` (untimed) runs before each."""
    times = []
    for _ in range(repeats):
        if setup is None:
            times.append(_ms(fn))
        else:
            state = setup()
            times.append(_ms(lambda: fn(state)))  # type: ignore[call-arg]
    return statistics.median(times)


def bench_type(
    index_type: str,
    base: np.ndarray,
    batch: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray | None,
    *,
    repeats: int,
    topk: int,
    workdir: Path,
) -> dict[str, float | None]:
    """Figures for one index type (IP metric)."""
    from streamd.index.library import FeatureLibrary

    dim = base.shape[1]
    labels_base = [f"p{i}" for i in range(len(base))]
    labels_batch = [f"q{i}" for i in range(len(batch))]

    def build_batch() -> None:
        FeatureLibrary.create(dim, index_type=index_type).add(batch, labels_batch)  # type: ignore[arg-type]

    row: dict[str, float | None] = {"build_batch": _median_ms(build_batch, repeats)}

    full = FeatureLibrary.create(dim, index_type=index_type)  # type: ignore[arg-type]
    row["build_full"] = _ms(lambda: full.add(base, labels_base))

    per_query = []
    top1 = []
    for q in queries:
        start = time.perf_counter()
        hits = full.search(q, topk)
        per_query.append((time.perf_counter() - start) * 1000.0)
        top1.append(hits[0][0].id if hits[0] else -1)
    row["query"] = statistics.median(per_query)
    row["recall"] = float(np.mean(np.asarray(top1) == truth)) if truth is not None else 1.0

    row["append"] = _median_ms(lambda lib: lib.add(batch, labels_batch), repeats, setup=full.copy)
    if index_type == "HNSW32":
        row["remove"] = None
    else:
        def grown() -> FeatureLibrary:
            lib = full.copy()
            lib.add(batch, labels_batch)
            return lib

        batch_ids = list(range(len(base), len(base) + len(batch)))
        row["remove"] = _median_ms(lambda lib: lib.remove(batch_ids), repeats, setup=grown)
    target = workdir / f"index-{index_type}"
    row["save"] = _median_ms(lambda: full.save(target), repeats)
    row["load"] = _median_ms(lambda: FeatureLibrary.load(target), repeats)
    return row


def _count(n: int) -> str:
    """100000 -> 100k, 1500000 -> 1.5M."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{suffix}"
    return str(n)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@click.command("index")
@click.option("--vectors", default=100_000, show_default=True, help="Gallery size searched and appended to.")
@click.option("--dim", default=128, show_default=True, help="Feature dimension.")
@click.option("--batch", default=10_000, show_default=True, help="Vectors per build / append / remove.")
@click.option("--queries", default=200, show_default=True, help="Single-vector queries timed per index type.")
@click.option("--repeats", default=3, show_default=True, help="Runs per timed operation (median reported).")
@click.option("--topk", default=5, show_default=True, help="Hits per query (rec_topk).")
@click.option("--seed", default=0, show_default=True, help="Random seed of the vectors.")
@click.option(
    "--types", default="Flat,IVF,HNSW32", show_default=True, help="Comma-separated index types to measure."
)
def command(vectors: int, dim: int, batch: int, queries: int, repeats: int, topk: int, seed: int, types: str) -> None:
    """Search, build, append, remove, save and load times of the feature library (IP, one thread)."""
    import faiss

    faiss.omp_set_num_threads(1)
    kinds = [t.strip() for t in types.split(",") if t.strip()]
    rng = np.random.default_rng(seed)
    base = unit_vectors(rng, vectors, dim)
    extra = unit_vectors(rng, batch, dim)
    q = probes(rng, base, min(queries, vectors))
    truth = np.argmax(q @ base.T, axis=1)  # exact top-1 ids (ids follow row order from 0)
    click.echo(
        f"streamd bench index: {vectors} x {dim}-d random unit vectors (seed {seed}), batch {batch}, "
        f"1 thread, IP, median of {repeats} runs, {len(q)} single-vector queries (top-{topk})"
    )
    n, b = _count(vectors), _count(batch)
    click.echo("all times in ms; query = one vector against the whole gallery")
    click.echo(
        f"{'type':<7} {'query':>7} {'target':>10} {'recall@1':>8} {'build ' + n:>11} {'build ' + b:>10} "
        f"{'append ' + b:>11} {'remove ' + b:>11} {'save ' + n:>10} {'load ' + n:>10}"
    )
    with tempfile.TemporaryDirectory(prefix="streamd-bench-index-") as tmp:
        for kind in kinds:
            row = bench_type(kind, base, extra, q, truth, repeats=repeats, topk=topk, workdir=Path(tmp))
            target = TARGET_QUERY_MS.get(kind)
            mark = "" if target is None else ("ok" if row["query"] <= target else "MISS")  # type: ignore[operator]
            target_text = "-" if target is None else f"<={target:g} {mark}"
            click.echo(
                f"{kind:<7} {_fmt(row['query'], 3):>7} {target_text:>10} {_fmt(row['recall'], 3):>8} "
                f"{_fmt(row['build_full'], 0):>11} {_fmt(row['build_batch'], 0):>10} {_fmt(row['append'], 0):>11} "
                f"{_fmt(row['remove'], 0):>11} {_fmt(row['save'], 0):>10} {_fmt(row['load'], 0):>10}"
            )
