"""SIGHUP reload: camera diff, live sections, refused configs keep the running one (fake app)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from streamd.reload import CameraDiff, ConfigReloader, changed_sections, diff_cameras
from streamd.settings import load_settings
from streamd.sources.config import CameraSettings

BASE = """\
cameras:
  - {name: door, url: "rtsp://10.0.0.5/live"}
  - {name: yard, url: "rtsp://10.0.0.6/live", sample_fps: 5}
  - {name: garage, url: "rtsp://10.0.0.7/live"}
mqtt: {enabled: false}
"""


def cam(name: str, **kw) -> CameraSettings:
    return CameraSettings(name=name, url=kw.pop("url", f"rtsp://h/{name}"), **kw)


class FakeApp:
    def __init__(self) -> None:
        self.applied: list[list[str]] = []

    def apply_cameras(self, cameras: Sequence[CameraSettings]) -> CameraDiff:
        self.applied.append([c.name for c in cameras])
        return CameraDiff(added=("from-app",))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ([cam("a")], [cam("a")], CameraDiff(unchanged=("a",))),
        ([cam("a")], [cam("a"), cam("b")], CameraDiff(added=("b",), unchanged=("a",))),
        ([cam("a"), cam("b")], [cam("b")], CameraDiff(removed=("a",), unchanged=("b",))),
        ([cam("a")], [cam("a", sample_fps=2)], CameraDiff(changed=("a",))),
        ([cam("a")], [cam("a", enabled=False)], CameraDiff(changed=("a",))),
        ([cam("a", url="rtsp://u:old@h/x")], [cam("a", url="rtsp://u:new@h/x")], CameraDiff(changed=("a",))),
        ([cam("a"), cam("b")], [cam("b"), cam("a")], CameraDiff(unchanged=("b", "a"))),
        ([], [], CameraDiff()),
    ],
)
def test_diff_cameras(old, new, expected):
    assert diff_cameras(old, new) == expected


def test_describe():
    assert CameraDiff(added=("a",), changed=("b", "c")).describe() == "added: a; changed: b, c"
    assert CameraDiff(unchanged=("a",)).describe() == "no camera changes"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_camera_changes_go_to_the_app_and_become_current(tmp_path, caplog):
    # given a running config and an edited file: yard changed, garage removed, porch added
    path = write(tmp_path / "streamd.yaml", BASE)
    app = FakeApp()
    reloader = ConfigReloader(path, load_settings(path), app)
    write(path, BASE.replace("sample_fps: 5", "sample_fps: 2").replace(
        '  - {name: garage, url: "rtsp://10.0.0.7/live"}\n', '  - {name: porch, url: "rtsp://10.0.0.8/live"}\n'))
    caplog.set_level(logging.INFO, logger="streamd.reload")
    # when
    result = reloader.reload()
    # then the app gets the new list, the result carries the app's own diff
    assert result.ok
    assert app.applied == [["door", "yard", "porch"]]
    assert result.cameras == CameraDiff(added=("from-app",))
    assert result.applied == ("cameras",)
    assert [c.name for c in reloader.current.cameras] == ["door", "yard", "porch"]
    assert "reload done: added: from-app" in caplog.text


def test_an_unchanged_file_touches_nothing(tmp_path):
    # given
    path = write(tmp_path / "streamd.yaml", BASE)
    app = FakeApp()
    reloader = ConfigReloader(path, load_settings(path), app)
    # when
    result = reloader.reload()
    # then
    assert result.ok and result.applied == () and result.restart_needed == ()
    assert app.applied == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "mqtt_typo: 1\n", "streamd.yaml: mqtt_typo: unknown key"),
        (BASE.replace("sample_fps: 5", "sample_fps: -1"), "streamd.yaml: cameras.1.sample_fps: Input should be greater than 0"),
        (BASE.replace("name: yard", "name: door"), "streamd.yaml: cameras: Value error, camera names must be unique, repeated: door"),
        (BASE + "log: {level: loud}\n", "streamd.yaml: log.level: Input should be 'debug', 'info', 'warning', 'error' or 'critical'"),
        ("cameras: [\n", "streamd.yaml: invalid YAML at line 2, column 1"),
    ],
)
def test_an_invalid_file_is_refused_and_the_running_config_stays(tmp_path, caplog, text, message):
    # given a running config
    path = write(tmp_path / "streamd.yaml", BASE)
    app = FakeApp()
    running = load_settings(path)
    reloader = ConfigReloader(path, running, app)
    # when the file is broken and SIGHUP arrives
    write(path, text)
    caplog.set_level(logging.ERROR, logger="streamd.reload")
    result = reloader.reload()
    # then refused, logged naming the key, nothing applied
    assert not result.ok
    assert message in result.error
    assert any(message in r.getMessage() and "reload refused" in r.getMessage() for r in caplog.records)
    assert app.applied == []
    assert reloader.current is running


def test_log_applies_live_and_other_sections_need_a_restart(tmp_path, caplog):
    # given a running config
    path = write(tmp_path / "streamd.yaml", BASE)
    applied_logs = []
    secrets_seen = []
    reloader = ConfigReloader(
        path, load_settings(path), FakeApp(), on_log_settings=applied_logs.append, on_secrets=secrets_seen.append
    )
    # when the log level, the index threshold and the http port change
    write(path, BASE + "log: {level: debug}\nindex: {rec_threshold: 0.5}\nhttp: {port: 9000}\n")
    caplog.set_level(logging.WARNING, logger="streamd.reload")
    result = reloader.reload()
    # then log is applied, index and http are reported and keep their running values
    assert result.ok
    assert [s.level for s in applied_logs] == ["debug"]
    assert len(secrets_seen) == 1
    assert result.applied == ("log",)
    assert result.restart_needed == ("index", "http")
    assert reloader.current.log.level == "debug"
    assert reloader.current.index.rec_threshold is None
    assert "changes to index, http need a restart" in caplog.text


def test_changed_sections_compares_secrets_by_value(tmp_path):
    # given two configs that differ only in the MQTT password
    a = load_settings(write(tmp_path / "a.yaml", "mqtt: {username: u, password: one}\n"))
    b = load_settings(write(tmp_path / "b.yaml", "mqtt: {username: u, password: two}\n"))
    # when / then
    assert changed_sections(a, b) == ["mqtt"]
    assert changed_sections(a, a.model_copy()) == []
