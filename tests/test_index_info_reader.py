"""id_map.yaml read by the parse server (a helper process) gives what the in-process parse gives:
the same labels and keys, the same refusals with the same messages, the generation that was opened."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamd.errors import FeatureLibraryError
from streamd.index import info_reader
from streamd.index.infofile import dump_index_info
from streamd.index.info_reader import IndexInfo, _ParseServer, read_index_info

HEADER = {"index_type": "Flat", "metric_type": "IP", "feature_dim": 16, "model_fingerprint": "fp"}
LABELS = {i: f"person {i % 300}" for i in range(3000)} | {5: "中文名", 6: "bad\udcff", 7: 'quo"te\n'}
PLAIN = {i: label for i, label in LABELS.items() if i != 6}  # PyYAML cannot read back its own "\udcff"


@pytest.fixture
def server() -> Iterator[_ParseServer]:
    fresh = _ParseServer()
    yield fresh
    fresh._stop()


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def parse(server: _ParseServer, path: Path) -> IndexInfo:
    fd = os.open(path, os.O_RDONLY)
    try:
        return server.parse(path, fd)
    finally:
        os.close(fd)


def here(path: Path) -> IndexInfo:
    fd = os.open(path, os.O_RDONLY)
    try:
        return info_reader._read_here(path, fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        (dump_index_info({**HEADER, "gallery_images": {"a/1.jpg": {"id": 7}}}, LABELS), LABELS),  # streamd's layout
        (yaml.dump({**HEADER, "id_map": PLAIN}, allow_unicode=True), PLAIN),  # PaddleX's (PyYAML) layout
    ],
    ids=["streamd", "pyyaml"],
)
def test_the_server_reads_what_the_in_process_parse_reads(
    tmp_path: Path, server: _ParseServer, text: str, labels: dict[int, str]
) -> None:
    # given
    path = write(tmp_path / "id_map.yaml", text)
    # when
    theirs, ours = parse(server, path), here(path)
    # then
    assert theirs.labels == labels and ours.labels == labels
    assert theirs.header == ours.header and theirs.header["model_fingerprint"] == "fp"
    assert theirs.extra == ours.extra
    assert parse(server, path).labels == labels  # the same server answers again


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"\xff\xfe", "not UTF-8 text"),
        ("index_type: [Flat\n", "invalid YAML at line 2"),
        ("- a\n", "expected a mapping with index_type, metric_type and id_map, got list"),
        ("index_type: Flat\nid_map: {}\n", "missing key(s) metric_type"),
        ("index_type: Flat\nmetric_type: cosine\nid_map: {}\n", "metric_type 'cosine' is not supported"),
        ("index_type: IVF2\nmetric_type: IP\nid_map: {}\n", "index_type 'IVF2' is not one of Flat, IVF, HNSW32"),
        ("index_type: Flat\nmetric_type: IP\nid_map: [a]\n", "id_map must be a mapping of id: label, got list"),
        ("index_type: Flat\nmetric_type: IP\nid_map: {x: a}\n", "id_map key 'x' is not an integer id"),
    ],
)
def test_the_server_refuses_a_bad_file_with_the_in_process_message(
    tmp_path: Path, server: _ParseServer, text: str | bytes, problem: str
) -> None:
    # given
    path = write(tmp_path / "id_map.yaml", text)
    # when
    with pytest.raises(FeatureLibraryError) as theirs:
        parse(server, path)
    with pytest.raises(FeatureLibraryError) as ours:
        here(path)
    # then
    assert str(theirs.value) == str(ours.value)
    assert str(theirs.value).startswith(f"{path}: ") and problem in str(theirs.value)


def test_the_server_reads_the_generation_that_was_opened(tmp_path: Path, server: _ParseServer) -> None:
    # given: the file is open, then replaced by another one (as an atomic save does)
    path = write(tmp_path / "id_map.yaml", dump_index_info(HEADER, {0: "old"}))
    fd = os.open(path, os.O_RDONLY)
    write(tmp_path / "next.yaml", dump_index_info(HEADER, {0: "new"})).replace(path)
    # when
    try:
        info = server.parse(path, fd)
        again = info_reader._read_here(path, fd)  # the server left the file offset alone
    finally:
        os.close(fd)
    # then
    assert info.labels == {0: "old"} and again.labels == {0: "old"}


def test_a_killed_server_is_started_again(tmp_path: Path, server: _ParseServer) -> None:
    # given
    path = write(tmp_path / "id_map.yaml", dump_index_info(HEADER, LABELS))
    parse(server, path)
    assert server._process is not None
    server._process.kill()
    server._process.wait()
    # when
    info = parse(server, path)
    # then
    assert info.labels == LABELS


def test_without_a_server_the_file_is_parsed_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given: a large file, and no interpreter to start the server with
    path = write(tmp_path / "id_map.yaml", dump_index_info(HEADER, LABELS))
    assert path.stat().st_size >= info_reader.SERVER_MIN_BYTES
    monkeypatch.setattr(info_reader, "_SERVER", _ParseServer())
    monkeypatch.setattr(info_reader.sys, "executable", str(tmp_path / "no-python"))
    fd = os.open(path, os.O_RDONLY)
    # when
    with caplog.at_level(logging.WARNING, logger="streamd.index.info_reader"):
        try:
            info = read_index_info(path, fd)
        finally:
            os.close(fd)
    # then
    assert info.labels == LABELS
    assert "parse server failed" in caplog.text and "parsing in this process" in caplog.text


def test_a_request_from_a_lowered_thread_is_parsed_at_idle_priority(tmp_path: Path, server: _ParseServer) -> None:
    # given: a thread lowered as the daemon's reload thread is
    path = write(tmp_path / "id_map.yaml", dump_index_info(HEADER, {0: "ann"}))
    result: list[IndexInfo] = []

    def reload_thread() -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 10)
        result.append(parse(server, path))

    # when
    thread = threading.Thread(target=reload_thread)
    thread.start()
    thread.join()
    # then: the server parsed it, and now yields the CPU to everything else
    assert result[0].labels == {0: "ann"}
    assert server._process is not None
    assert os.sched_getscheduler(server._process.pid) == os.SCHED_IDLE
    assert os.getpriority(os.PRIO_PROCESS, server._process.pid) >= 10
