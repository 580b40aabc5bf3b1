"""`streamd bench reload` runs end to end on small indexes, builds them once into its cache, and
refuses sizes it cannot read."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from streamd.cli import cli


def run(cache: Path, *extra: str):
    return CliRunner().invoke(
        cli,
        ["bench", "reload", "--sizes", "500,1.5k", "--types", "Flat,HNSW32", "--dim", "16", "--reloads", "2",
         "--quiet-s", "0.1", "--min-busy-s", "0", "--cache-dir", str(cache), *extra],
    )


def test_bench_reload_prints_a_row_per_type_and_size_and_reuses_its_cache(tmp_path: Path) -> None:
    # when
    first = run(tmp_path / "cache")
    second = run(tmp_path / "cache")
    # then
    assert first.exit_code == 0, first.output
    rows = [line.split() for line in first.stdout.splitlines() if line.startswith(("Flat ", "HNSW32 "))]
    assert [(r[0], r[1]) for r in rows] == [("Flat", "500"), ("Flat", "1.5k"), ("HNSW32", "500"), ("HNSW32", "1.5k")]
    assert all(r[2] != "cached" and r[-1] == "0" for r in rows)  # built this time; no failed search
    assert "load average before:" in first.stdout and "load average after:" in first.stdout
    again = [line.split() for line in second.stdout.splitlines() if line.startswith(("Flat ", "HNSW32 "))]
    assert [r[2] for r in again] == ["cached"] * 4
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "Flat-1500x16-seed0", "Flat-500x16-seed0", "HNSW32-1500x16-seed0", "HNSW32-500x16-seed0",
    ]


def test_bench_reload_refuses_a_size_it_cannot_read(tmp_path: Path) -> None:
    result = run(tmp_path, "--sizes", "lots")
    assert result.exit_code == 2
    assert "'lots' is not a count like 1000, 1k or 1M" in result.output


def test_bench_reload_keeps_reloading_for_min_busy_s_and_prints_the_stall(tmp_path: Path) -> None:
    # when
    result = CliRunner().invoke(
        cli,
        ["bench", "reload", "--sizes", "500", "--types", "Flat", "--dim", "16", "--reloads", "1", "--quiet-s", "0.1",
         "--min-busy-s", "0.5", "--label-listener", "--cache-dir", str(tmp_path)],
    )
    # then: more reloads than asked for (each takes milliseconds), and the stall columns
    assert result.exit_code == 0, result.output
    header = next(line.split() for line in result.stdout.splitlines() if line.startswith("type "))
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("Flat "))
    assert header[5] == "n" and int(row[4]) > 1  # ("build s" is two words of the header)
    assert "stall" in header and row[-4].startswith(("+", "-")) and row[-3].startswith(("+", "-")) and ">" in row[-2]
    assert "label-change listener" in result.stdout
