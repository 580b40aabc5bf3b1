"""`streamd bench index` runs end to end on a small gallery and prints one row per index type."""

from __future__ import annotations

from click.testing import CliRunner

from streamd.cli import cli


def test_bench_index_prints_a_row_per_index_type() -> None:
    # when
    result = CliRunner().invoke(
        cli, ["bench", "index", "--vectors", "2000", "--dim", "16", "--batch", "500", "--queries", "10", "--repeats", "1"]
    )
    # then
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[3:]}
    assert sorted(rows) == ["Flat", "HNSW32", "IVF"]
    assert rows["HNSW32"][-3] == "n/a"  # HNSW32 has no remove
    assert "2000 x 16-d random unit vectors" in result.stdout
    assert float(rows["Flat"][4]) == 1.0  # Flat is exact: recall@1 of 1
