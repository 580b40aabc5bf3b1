"""Read an open id_map.yaml into a LabelTable without holding the GIL for long.

Parsing a large id map is seconds of Python work (a million entries; PaddleX's own YAML layout is
ten times slower still). Done in the daemon's process, that work holds the GIL, and on a 2-core
box the frame path then waits up to the interpreter's 5 ms switch interval for each of its GIL
re-acquisitions: the reload stalls recognition. So a file of ``SERVER_MIN_BYTES`` or more is
parsed by a parse server, a helper process (``python -I streamd/index/infofile.py --serve``)
started at the first such load and kept: it receives the already open file descriptor over a
Unix socket (so it reads the very generation the caller opened, see
``library._load_from_dir_fd``), validates the file exactly as the in-process parse does (same
messages) and answers with the ids, label codes and label text as raw arrays, which this process
receives straight into numpy arrays (socket reads release the GIL).

Why a kept server, not a child per load: starting a process holds the GIL of the starting thread
until the child has executed Python (vfork), and a child at the reload thread's low priority may
wait long for a CPU while cameras are busy; the frame path would wait with it. The server takes
the requesting thread's nice value for each parse (and SCHED_IDLE for a lowered thread's, see
``infofile._take_priority``), and re-executes itself after an answer that left it large, so it
does not keep the memory a big parse used.

Small files are parsed here: a few thousand entries hold the GIL for about a millisecond. If the
server cannot run (no usable ``sys.executable``, killed), the file is parsed here after all,
with a warning.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamd.errors import FeatureLibraryError
from streamd.index import infofile
from streamd.index.infofile import ID_MAP_KEY, OWN_KEYS, IndexInfoError
from streamd.index.labels import LabelTable

log = logging.getLogger(__name__)

#: Files at least this large are parsed by the parse server (~600 entries of streamd's layout).
SERVER_MIN_BYTES = 16 * 1024


@dataclass
class IndexInfo:
    """A validated id map file: the library's own header keys, the labels, and the other keys.

    The other keys (``extra``; the gallery watcher's record of images can be as large as the id
    map) stay pickled until first asked for: the daemon's reload never needs them.
    """

    header: dict[str, Any]
    labels: LabelTable
    _extra: dict[str, Any] | None = None
    _extra_pickle: bytes | None = field(default=None, repr=False)

    @property
    def extra(self) -> dict[str, Any]:
        if self._extra is None:
            self._extra = pickle.loads(self._extra_pickle) if self._extra_pickle else {}  # noqa: S301 - our own server's answer
            self._extra_pickle = None
        return self._extra


class _ServerFailed(Exception):
    """The parse server failed for a reason other than the file (parse it here instead)."""


def read_index_info(path: Path, fd: int) -> IndexInfo:
    """Read and validate the id map file open at ``fd`` (``path`` is only shown in errors).

    Raises FeatureLibraryError naming ``path`` and the problem.
    """
    size = os.fstat(fd).st_size
    if size >= SERVER_MIN_BYTES:
        try:
            return _SERVER.parse(path, fd)
        except _ServerFailed as exc:
            log.warning("%s: the id map parse server failed (%s); parsing in this process", path, exc)
    return _read_here(path, fd)


def _read_here(path: Path, fd: int) -> IndexInfo:
    try:
        info = infofile.parse_index_info(str(path), infofile.pread_all(fd))
    except IndexInfoError as exc:
        raise FeatureLibraryError(str(exc)) from None
    labels = LabelTable.from_mapping(info.pop(ID_MAP_KEY))
    header = {k: v for k, v in info.items() if k in OWN_KEYS}
    return IndexInfo(header, labels, _extra={k: v for k, v in info.items() if k not in OWN_KEYS})


class _ParseServer:
    """The parse server process, started on first use; one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._pid = os.getpid()

    def parse(self, path: Path, fd: int) -> IndexInfo:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the server and its socket are the parent's
                self._process, self._sock, self._pid = None, None, os.getpid()
            fresh = self._sock is None
            if fresh:
                self._start()
            try:
                return self._ask(path, fd)
            except _ServerFailed:
                self._stop()
                if fresh:
                    raise
            self._start()  # it had served before: it may have been killed since; one more try
            try:
                return self._ask(path, fd)
            except _ServerFailed:
                self._stop()
                raise

    def _start(self) -> None:
        script = infofile.__file__
        if not sys.executable or not script or not script.endswith(".py"):
            raise _ServerFailed("no Python interpreter or script to run")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", script, "--serve", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            raise _ServerFailed(f"cannot start {sys.executable}: {exc.strerror}") from None
        finally:
            theirs.close()
        self._sock = ours

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._process is not None:
            self._process.kill()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._process, self._sock = None, None

    def _ask(self, path: Path, fd: int) -> IndexInfo:
        assert self._sock is not None
        name = str(path).encode("utf-8", "surrogateescape")
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        try:
            socket.send_fds(self._sock, [infofile.REQUEST.pack(nice, len(name)) + name], [fd])
            return _receive(self._sock)
        except (OSError, EOFError) as exc:
            raise _ServerFailed(str(exc) or type(exc).__name__) from None


_SERVER = _ParseServer()


def _receive(sock: socket.socket) -> IndexInfo:
    """The server's answer (see infofile.SECTIONS): the arrays, or FeatureLibraryError with its message."""
    status = _read_bytes(sock, 1)
    if status == infofile.ANSWER_INVALID:
        (length,) = infofile.MESSAGE_LENGTH.unpack(_read_bytes(sock, infofile.MESSAGE_LENGTH.size))
        raise FeatureLibraryError(_read_bytes(sock, length).decode("utf-8", "replace"))
    magic = infofile.ARRAYS_MAGIC
    head = _read_bytes(sock, len(magic) + infofile.SECTION_LENGTHS.size)
    if status != infofile.ANSWER_OK or head[: len(magic)] != magic:
        raise _ServerFailed("unexpected answer")
    n_ids, n_offsets, n_codes, n_blob, n_header, n_extra = infofile.SECTION_LENGTHS.unpack(head[len(magic) :])
    ids = _read_array(sock, n_ids, np.int64)
    offsets = _read_array(sock, n_offsets, np.int64)
    codes = _read_array(sock, n_codes, np.int32)
    blob = _read_bytes(sock, n_blob)
    header = pickle.loads(_read_bytes(sock, n_header))  # noqa: S301 - our own server's answer
    extra = _read_bytes(sock, n_extra)
    try:
        # The server lists only labels some id uses: no compaction pass needed (it would hold the GIL).
        labels = LabelTable.from_arrays(ids, codes, offsets, blob, compact=False)
    except ValueError as exc:
        raise _ServerFailed(f"inconsistent answer: {exc}") from None
    return IndexInfo(header, labels, _extra_pickle=extra)


def _read_bytes(sock: socket.socket, n: int) -> bytes:
    return _read_array(sock, n, np.uint8).tobytes()


def _read_array(sock: socket.socket, nbytes: int, dtype: type) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    if nbytes % itemsize:
        raise _ServerFailed("unexpected answer")
    out = np.empty(nbytes // itemsize, dtype=dtype)
    infofile.recv_exact_into(sock, memoryview(out).cast("B"))
    return out
