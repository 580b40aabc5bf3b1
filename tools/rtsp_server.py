#!/usr/bin/python3
"""A small RTSP server that serves the H.264 video of a file, looping, like an IP camera.

    python tools/rtsp_server.py --file clip.mp4 [--port 8554] [--path /live] [--host 127.0.0.1]
    # then: rtsp://127.0.0.1:8554/live   (TCP or UDP transport)

The H.264 is served as it is in the file (no re-encoding): the file's keyframe interval is the
stream's. The file (MP4, MOV, MKV...) must hold H.264 video; other tracks are ignored. Playback
loops seamlessly (segment seeks keep timestamps increasing), and all clients share one stream,
as they would a camera. The server prints ``ready rtsp://...`` once it listens and stops
cleanly on SIGTERM or Ctrl-C.

It uses GStreamer's RTSP server from Debian's packages, which run under the system Python::

    apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 \\
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad

(parsebin is in -base; qtdemux, matroskademux, rtph264pay and the RTP/UDP elements in -good;
h264parse in -bad. Nothing is decoded, so no codec package is needed.)

Started with another interpreter (a venv without PyGObject) it re-runs itself with
/usr/bin/python3.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


def _import_gst():  # type: ignore[no-untyped-def]
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    return GLib, Gst, GstRtspServer


def _reexec_with_system_python() -> None:
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.path.exists(SYSTEM_PYTHON):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the H.264 video of a file over RTSP, looping.")
    p.add_argument("--file", required=True, type=Path, help="video file with an H.264 track (mp4, mov, mkv)")
    p.add_argument("--port", type=int, default=8554, help="TCP port to listen on (default 8554)")
    p.add_argument("--path", default="/live", help="mount path of the stream (default /live)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    p.add_argument("--no-loop", action="store_true", help="end the stream at the end of the file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.file.is_file():
        print(f"error: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        GLib, Gst, GstRtspServer = _import_gst()
    except (ImportError, ValueError):
        _reexec_with_system_python()
        print(
            "error: GStreamer's RTSP server is not available: apt-get install -y python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-bad",
            file=sys.stderr,
        )
        return 2
    Gst.init(None)
    path = args.path if args.path.startswith("/") else "/" + args.path
    location = str(args.file.resolve()).replace("\\", "\\\\").replace('"', '\\"')
    # parsebin demuxes any container. h264parse repeats SPS/PPS before every keyframe for clients
    # that join late; whole access units (alignment=au) make it insert them once per frame, not
    # before each slice, which would split multi-slice frames in two at the client.
    launch = (
        f'( filesrc location="{location}" ! parsebin ! h264parse name=parse config-interval=-1 '
        "! video/x-h264,stream-format=byte-stream,alignment=au ! rtph264pay name=pay0 pt=96 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    if not args.no_loop:
        factory.connect("media-configure", lambda _f, media: _loop_media(media, GLib, Gst))

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port} (port in use?)", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, lambda: (loop.quit(), False)[1])
    print(f"ready rtsp://{args.host}:{args.port}{path}", flush=True)
    loop.run()
    return 0


def _loop_media(media, GLib, Gst) -> None:  # type: ignore[no-untyped-def]
    """Make a media replay its file without end.

    A first flushing *segment* seek, once the media is prepared, makes the demuxer announce the
    end of the file with a SEGMENT_DONE event instead of EOS; each SEGMENT_DONE then triggers a
    non-flushing segment seek back to 0. Running time, hence RTP timestamps, keeps growing.
    """
    pipeline = media.get_element()
    parse = pipeline.get_by_name("parse")

    def seek(flush: bool) -> bool:
        flags = Gst.SeekFlags.SEGMENT | Gst.SeekFlags.FLUSH if flush else Gst.SeekFlags.SEGMENT
        pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        return False  # one-shot idle callback

    def on_event(_pad, info):  # type: ignore[no-untyped-def]
        event = info.get_event()
        if event.type == Gst.EventType.SEGMENT_DONE:
            GLib.idle_add(seek, False)
            return Gst.PadProbeReturn.DROP
        if event.type == Gst.EventType.EOS:
            # Reached only if the first segment seek did not take: restart with a flushing one.
            GLib.idle_add(seek, True)
            return Gst.PadProbeReturn.DROP
        return Gst.PadProbeReturn.OK

    parse.get_static_pad("sink").add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, on_event)
    media.connect("prepared", lambda _m: seek(True))


if __name__ == "__main__":
    sys.exit(main())
