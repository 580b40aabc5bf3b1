"""Structured logging: logfmt/JSON lines, journald mode, per-camera context, rate limit, redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import threading

import pytest

from streamd.log_filters import RateLimitFilter, SecretRedactor, camera_logger, log_context
from streamd.logging_setup import LogSettings, RateLimitSettings, secrets_from_settings, setup_logging
from streamd.settings import load_settings


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hook = threading.excepthook
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    threading.excepthook = hook
    for name in ("uvicorn.access", "streamd.test.quiet"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def capture(settings: LogSettings | None = None, **kwargs) -> tuple[io.StringIO, object]:
    out = io.StringIO()
    setup = setup_logging(settings or LogSettings(), stream=out, environ={}, **kwargs)
    return out, setup


def lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line]


def test_logfmt_line_has_time_level_logger_message_and_extra_fields(restore_logging):
    # given logfmt (the default)
    out, _ = capture()
    # when
    logging.getLogger("streamd.test").warning("camera %s down", "garage", extra={"attempts": 3, "error": "no route"})
    # then
    [line] = lines(out)
    assert line.startswith("ts=")
    ts = line.split()[0][3:]
    assert len(ts) == len("2025-01-31T12:00:00.123Z") and ts.endswith("Z")
    assert ' level=warning logger=streamd.test msg="camera garage down" attempts=3 error="no route"' in line


def test_json_line_keeps_a_traceback_on_one_line(restore_logging):
    # given the json format
    out, _ = capture(LogSettings(format="json"))
    # when an exception is logged
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("streamd.test").exception("decode failed", extra={"camera": "door"})
    # then one line, one JSON object with the traceback in exc
    [line] = lines(out)
    record = json.loads(line)
    assert record["level"] == "error"
    assert record["msg"] == "decode failed"
    assert record["camera"] == "door"
    assert "ValueError: bad frame" in record["exc"]
    assert "ts" in record


def test_journald_mode_when_stderr_is_the_journal_stream(restore_logging, tmp_path):
    # given a stream whose device and inode are in $JOURNAL_STREAM, as systemd sets them
    stream = open(tmp_path / "journal", "w+")
    st = os.fstat(stream.fileno())
    setup = setup_logging(LogSettings(), stream=stream, environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    # when
    log = logging.getLogger("streamd.test")
    log.error("mqtt refused")
    log.info("camera up")
    stream.flush()
    # then no time stamp (the journal has its own) and a syslog priority prefix
    assert setup.journald
    assert (tmp_path / "journal").read_text().splitlines() == [
        '<3>level=error logger=streamd.test msg="mqtt refused"',
        '<6>level=info logger=streamd.test msg="camera up"',
    ]
    stream.close()


def test_another_journal_stream_does_not_turn_journald_mode_on(restore_logging, tmp_path):
    # given $JOURNAL_STREAM inherited from a parent, naming another stream
    stream = open(tmp_path / "log", "w+")
    setup = setup_logging(LogSettings(), stream=stream, environ={"JOURNAL_STREAM": "8:12345"})
    # when
    logging.getLogger("streamd.test").warning("x")
    stream.flush()
    # then
    assert not setup.journald
    assert (tmp_path / "log").read_text().startswith("ts=")
    stream.close()


def test_camera_context_in_a_thread_and_through_an_adapter(restore_logging):
    # given
    out, _ = capture(LogSettings(journald="on"))
    log = logging.getLogger("streamd.test")

    def camera_thread() -> None:
        with log_context(camera="door"):
            log.info("connected")

    # when one thread sets the context and another logs through an adapter
    t = threading.Thread(target=camera_thread, name="camera-door")
    t.start()
    t.join()
    camera_logger(log, "garage").warning("stalled")
    log.info("no camera here")
    # then
    assert lines(out) == [
        '<6>level=info logger=streamd.test thread=camera-door msg=connected camera=door',
        '<4>level=warning logger=streamd.test msg=stalled camera=garage',
        '<6>level=info logger=streamd.test msg="no camera here"',
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, camera: str | None = None, level: int = logging.WARNING, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("streamd.sources", level, __file__, 1, msg, ("x",), None)
    if camera is not None:
        rec.camera = camera
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_rate_limit_lets_a_burst_through_then_counts_the_rest():
    # given a 10 s window with a burst of 5
    clock = Clock()
    limit = RateLimitFilter(10.0, 5, clock=clock)
    # when camera garage fails every 100 ms for 10 s, and camera door fails once
    passed = []
    for i in range(100):
        clock.now = i * 0.1
        passed.append(limit.filter(record("connect failed: %s", "garage")))
    door = limit.filter(record("connect failed: %s", "door"))
    clock.now = 10.0
    after = record("connect failed: %s", "garage")
    passed_after = limit.filter(after)
    # then 5 lines in the first window, door unaffected, and the next line reports the 95 suppressed
    assert sum(passed) == 5 and passed[:5] == [True] * 5
    assert door is True
    assert passed_after is True
    assert after.suppressed == 95
    assert limit.pending() == 0


def test_rate_limit_exemptions():
    # given a burst of 1
    limit = RateLimitFilter(10.0, 1, clock=Clock())
    # when the same message repeats at CRITICAL, with ratelimit False, and normally
    critical = [limit.filter(record("boom", level=logging.CRITICAL)) for _ in range(3)]
    exempt = [limit.filter(record("state", ratelimit=False)) for _ in range(3)]
    normal = [limit.filter(record("state")) for _ in range(3)]
    # then
    assert critical == [True] * 3
    assert exempt == [True] * 3
    assert normal == [True, False, False]


def test_rate_limit_end_to_end_says_how_many_were_suppressed(restore_logging):
    # given the daemon's handler with a burst of 2 (a real window: 0.2 s)
    out, _ = capture(LogSettings(rate_limit=RateLimitSettings(interval_s=0.2, burst=2)))
    log = camera_logger(logging.getLogger("streamd.test"), "garage")
    # when a message repeats 50 times, then once more after the window
    for _ in range(50):
        log.warning("reconnect failed")
    import time

    time.sleep(0.25)
    log.warning("reconnect failed")
    # then
    got = lines(out)
    assert len(got) == 3
    assert got[-1].endswith("camera=garage suppressed=48")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("open rtsp://admin:hunter22@10.0.0.5:554/live failed", "open rtsp://admin:***@10.0.0.5:554/live failed"),
        ("GET /snap.jpg?user=a&password=hunter22 404", "GET /snap.jpg?user=a&password=*** 404"),
        ("Authorization: Bearer abcdef0123456789abcdef", "Authorization: Bearer ***"),
        ("header authorization=Basic dXNlcjpodW50ZXIy", "header authorization=Basic ***"),
        ("login password=hunter22 user=bob", "login password=*** user=bob"),
        ("mqtt.password=hunter22", "mqtt.password=***"),
        ('{"username": "bob", "password": "hunter22"}', '{"username": "bob", "password": "***"}'),
        ("{'token': 'abcdef0123'}", "{'token': '***'}"),
        ("the known secret s3cr3t-value appears raw", "the known secret *** appears raw"),
        # not secrets: config errors name keys, paths name files
        ("http.token: the token is empty", "http.token: the token is empty"),
        ("mqtt.password_file=/run/credentials/streamd.service/mqtt_password",
         "mqtt.password_file=/run/credentials/streamd.service/mqtt_password"),
        ("token bucket refilled", "token bucket refilled"),
    ],
)
def test_redaction(text, expected):
    # given a redactor that knows one literal secret
    redact = SecretRedactor(["s3cr3t-value"])
    # when / then
    assert redact(text) == expected


def test_a_known_secret_in_a_traceback_is_masked(restore_logging):
    # given the daemon's handler, told the MQTT password
    out, setup = capture(secrets=["Pa55word!"])
    # when a library puts it in an exception message
    try:
        raise ConnectionError("auth failed for password Pa55word!")
    except ConnectionError:
        logging.getLogger("paho").exception("connect failed")
    # then
    text = out.getvalue()
    assert "Pa55word!" not in text
    assert "auth failed for password ***" in text


def test_secrets_from_settings(tmp_path, monkeypatch):
    # given a config with an MQTT password file, an HTTP token variable and a camera password
    (tmp_path / "mqtt_password").write_text("mqtt-secret-1\n")
    monkeypatch.setenv("TEST_HTTP_TOKEN", "http-token-0123456789")
    cfg = tmp_path / "streamd.yaml"
    cfg.write_text(
        f"mqtt: {{username: u, password_file: {tmp_path / 'mqtt_password'}}}\n"
        "http: {token_env: TEST_HTTP_TOKEN}\n"
        "cameras: [{name: door, url: 'rtsp://v:cam-pass-9@10.0.0.5/live'}]\n"
    )
    # when
    found = secrets_from_settings(load_settings(cfg))
    # then
    assert {"mqtt-secret-1", "http-token-0123456789", "cam-pass-9"} <= set(found)


def test_setup_replaces_basic_config_and_applies_logger_levels(restore_logging):
    # given logging.basicConfig as the CLI group does it
    root = logging.getLogger()
    plain = logging.StreamHandler(io.StringIO())
    root.addHandler(plain)
    # when
    out, _ = capture(LogSettings(level="debug", levels={"streamd.test.quiet": "error"}))
    logging.getLogger("streamd.test").debug("shown")
    logging.getLogger("streamd.test.quiet").warning("hidden")
    # then
    assert plain not in root.handlers
    assert [line.split("msg=")[1] for line in lines(out)] == ["shown"]


def test_apply_changes_format_and_level_live(restore_logging):
    # given a running logfmt setup at info
    out, setup = capture()
    log = logging.getLogger("streamd.test")
    log.debug("before")
    # when a reload switches to json at debug
    setup.apply(LogSettings(format="json", level="debug"))
    log.debug("after")
    # then
    [line] = lines(out)
    assert json.loads(line)["msg"] == "after"


def test_a_crashed_thread_is_one_structured_line(restore_logging):
    # given
    out, _ = capture(LogSettings(journald="on"))

    def boom() -> None:
        raise RuntimeError("worker fell over")

    # when
    t = threading.Thread(target=boom, name="worker-1")
    t.start()
    t.join()
    # then
    [line] = lines(out)
    assert line.startswith('<2>level=critical logger=streamd thread=worker-1 msg="thread worker-1 died" exc="Traceback')
    assert "RuntimeError: worker fell over" in line


def test_a_thread_target_with_log_context(restore_logging):
    # given the daemon's handler and a camera thread started the way CameraSource starts it
    from streamd.log_filters import with_log_context

    out, _ = capture(LogSettings(journald="on"))
    target = with_log_context(lambda: logging.getLogger("streamd.test").warning("stalled"), camera="yard")
    # when
    t = threading.Thread(target=target, name="streamd-camera-yard")
    t.start()
    t.join()
    # then
    assert lines(out) == ['<4>level=warning logger=streamd.test thread=streamd-camera-yard msg=stalled camera=yard']
