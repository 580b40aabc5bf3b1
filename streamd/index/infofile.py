"""The text of ``id_map.yaml``: YAML that PaddleX reads, written and read fast for large galleries.

PyYAML needs about 1.5 s to parse an id map of 100k entries (15 s for 1M), even with libyaml,
which would make every index reload slow. So streamd writes the small header with PyYAML and the
id map itself one ``  <id>: "<label>"`` line per vector, the label as a JSON string. A JSON string
is also a valid YAML double-quoted scalar (characters YAML forbids raw are escaped), so PaddleX's
YAML loader reads the same mapping. When reading, that exact shape is parsed with one
``json.loads``; any other file (PaddleX's own unquoted labels, hand edits) goes through PyYAML.

``parse_index_info`` also validates the document (the keys PaddleX needs, known index and metric
types, integer ids); every problem is an ``IndexInfoError`` naming the file.

Run as a script (``python -I infofile.py --serve <socket fd>``), this module is the parse server
of ``streamd.index.info_reader``: it receives open id map files over a Unix socket, parses them in
its own process and answers with raw arrays (``encode_arrays``). The daemon parses large id maps
that way: a million entries take seconds of Python work, which in the daemon's process would hold
the GIL and stall the frame path. So this module imports only the standard library and PyYAML.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import struct
import sys
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

ID_MAP_KEY = "id_map"
INDEX_TYPES: tuple[str, ...] = ("Flat", "IVF", "HNSW32")
METRIC_TYPES: tuple[str, ...] = ("IP", "L2")
#: Keys the library itself reads and writes; any other top-level key is an "extra".
OWN_KEYS = frozenset({"index_type", "metric_type", "feature_dim", "model_fingerprint", "created_at", "updated_at", ID_MAP_KEY})


class IndexInfoError(ValueError):
    """The id map file is not valid; the message names the file and the problem (one line)."""

# Characters PyYAML's reader refuses raw (outside its printable set), plus NEL and the Unicode line and
# paragraph separators, which YAML would fold: written as \uXXXX escapes instead.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_LINE = re.compile(r'^  (-?\d+): ("(?:[^"\\\n]|\\.)*")$', re.MULTILINE)


def _quote(label: str) -> str:
    text = json.dumps(label, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dump_index_info(header: dict[str, Any], id_map: Mapping[int, str]) -> str:
    """``header`` keys (PyYAML block style) followed by ``id_map`` with one quoted label per line."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    head = yaml.dump(header, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if not id_map:
        return head + f"{ID_MAP_KEY}: {{}}\n"
    lines = [f"  {int(k)}: {_quote(str(v))}\n" for k, v in id_map.items()]
    return head + f"{ID_MAP_KEY}:\n" + "".join(lines)


def load_index_info(text: str) -> Any:
    """Parse an id_map.yaml / index_info.yaml text; raises yaml.YAMLError like PyYAML."""
    fast = _load_fast(text)
    if fast is not None:
        return fast
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader


def _load_fast(text: str) -> dict[str, Any] | None:
    """The mapping when ``text`` has exactly the shape dump_index_info writes, else None.

    The id map is parsed in slices of about ``_SLICE_CHARS``: one regex and one JSON call over a
    million lines would hold the GIL for most of a second, stalling every other thread (the frame
    path, while the daemon reloads its index); between slices other threads get their turn.
    """
    head, sep, body = text.partition(f"\n{ID_MAP_KEY}:\n")
    if not sep:
        return None
    try:
        header = yaml.load(head + "\n", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError:
        return None
    if not isinstance(header, dict) or ID_MAP_KEY in header:
        return None
    id_map: dict[int, str] = {}
    for piece in _line_slices(body, _SLICE_CHARS):
        pairs = _LINE.findall(piece)
        if len(pairs) != sum(1 for line in piece.split("\n") if line):  # some line has another shape
            return None
        try:
            raw = json.loads("{" + ",".join(f'"{key}": {label}' for key, label in pairs) + "}")
        except ValueError:
            return None
        id_map.update((int(k), v) for k, v in raw.items())
    header[ID_MAP_KEY] = id_map
    return header


_SLICE_CHARS = 1 << 16  # ~2.5k id map lines: each slice holds the GIL for about a millisecond


def _line_slices(text: str, size: int) -> Iterator[str]:
    """``text`` in consecutive slices of about ``size`` characters, each ending at a line end."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


# ---------------------------------------------------------------------- validated parse


def parse_index_info(path: str, data: bytes) -> dict[str, Any]:
    """The validated document of an id_map.yaml read from ``path``, its ``id_map`` an int -> str dict."""
    try:
        info = load_index_info(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise IndexInfoError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise IndexInfoError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(info, dict):
        raise IndexInfoError(f"{path}: expected a mapping with index_type, metric_type and id_map, got {type(info).__name__}")
    missing = [k for k in ("index_type", "metric_type", ID_MAP_KEY) if k not in info]
    if missing:
        raise IndexInfoError(f"{path}: missing key(s) {', '.join(missing)}")
    if info["metric_type"] not in METRIC_TYPES:
        raise IndexInfoError(
            f"{path}: metric_type {info['metric_type']!r} is not supported (streamd reads {', '.join(METRIC_TYPES)})"
        )
    if info["index_type"] not in INDEX_TYPES:
        raise IndexInfoError(f"{path}: index_type {info['index_type']!r} is not one of {', '.join(INDEX_TYPES)}")
    raw = info[ID_MAP_KEY] if info[ID_MAP_KEY] is not None else {}
    if not isinstance(raw, dict):
        raise IndexInfoError(f"{path}: id_map must be a mapping of id: label, got {type(raw).__name__}")
    id_map: dict[int, str] = {}
    for key, label in raw.items():
        try:
            id_map[int(key)] = str(label)
        except (TypeError, ValueError):
            raise IndexInfoError(f"{path}: id_map key {key!r} is not an integer id") from None
    info[ID_MAP_KEY] = id_map
    return info


# ---------------------------------------------------------------------- the parse server

#: A request: the parse server's nice value, the length of the path shown in errors, then the path
#: (UTF-8, surrogateescape); the file descriptor to parse travels with its first byte (SCM_RIGHTS).
REQUEST = struct.Struct("<iI")
#: First byte of an answer: the file parsed (then the arrays) or invalid (then a message).
ANSWER_OK, ANSWER_INVALID = b"\x00", b"\x01"
#: After ANSWER_OK: this magic, the section lengths (little-endian uint64 each), the sections.
ARRAYS_MAGIC = b"streamd-idmap/1\n"
#: The sections, in this order: ids (int64, ascending), label offsets (int64), label codes (int32,
#: one per id), label text (UTF-8, surrogatepass), own header keys (pickle), other keys (pickle).
SECTIONS = ("ids", "offsets", "codes", "blob", "header", "extra")
SECTION_LENGTHS = struct.Struct("<" + "Q" * len(SECTIONS))
MESSAGE_LENGTH = struct.Struct("<I")


def encode_arrays(info: dict[str, Any]) -> list[bytes]:
    """A parsed document as the pieces of an ANSWER_OK (see SECTIONS); labels used by no id are left out."""
    pairs = sorted(info[ID_MAP_KEY].items())
    code_of: dict[str, int] = {}
    ids = array("q", (i for i, _ in pairs))
    codes = array("i", (code_of.setdefault(label, len(code_of)) for _, label in pairs))
    encoded = [name.encode("utf-8", "surrogatepass") for name in code_of]
    offsets = array("q", [0])
    total = 0
    for piece in encoded:
        total += len(piece)
        offsets.append(total)
    header = pickle.dumps({k: v for k, v in info.items() if k in OWN_KEYS and k != ID_MAP_KEY})
    extra = pickle.dumps({k: v for k, v in info.items() if k not in OWN_KEYS})
    sections = [ids.tobytes(), offsets.tobytes(), codes.tobytes(), b"".join(encoded), header, extra]
    return [ANSWER_OK, ARRAYS_MAGIC, SECTION_LENGTHS.pack(*(len(s) for s in sections)), *sections]


def recv_exact_into(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` (bytes) from ``sock``; EOFError when the peer closes first.

    Each recv is one system call without the GIL, straight into the caller's buffer (a numpy
    array's, for the parse server's answers), so large answers cost no copies.
    """
    done, total = 0, len(view)
    while done < total:
        n = sock.recv_into(view[done:])
        if not n:
            raise EOFError("the other end closed the connection")
        done += n


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buffer = bytearray(n)
    recv_exact_into(sock, memoryview(buffer))
    return bytes(buffer)


def pread_all(fd: int) -> bytes:
    """The whole file from its start, leaving the (shared) file offset alone."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _take_priority(nice: int) -> None:
    """Run at the requesting thread's priority.

    A request from a lowered thread (the daemon's reload thread) is background work: the server
    then also switches to SCHED_IDLE, so that the kernel preempts it at once for any other task
    and places a waking camera thread on its CPU; at nice 10 alone a frame thread still waited
    a few ms for a CPU now and then while the server parsed. (SCHED_IDLE work still progresses,
    slowly, on a fully busy box.) An unprivileged server cannot raise its priority again: a later
    foreground request is then served at the lower one.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        pass
    try:
        if nice > 0:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif os.sched_getscheduler(0) == os.SCHED_IDLE:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # not Linux, or not permitted: the nice value alone


def answer(sock: socket.socket) -> bool:
    """Read one request from ``sock``, parse its file and send the answer; False at the end of requests."""
    try:
        head, fds, _flags, _addr = socket.recv_fds(sock, REQUEST.size, 1)
    except ConnectionError:
        return False
    if not head:
        return False
    try:
        head += _recv_exact(sock, REQUEST.size - len(head))
        nice, length = REQUEST.unpack(head)
        path = _recv_exact(sock, length).decode("utf-8", "surrogateescape")
    except EOFError:
        return False
    if not fds:
        raise RuntimeError("a request came without its file descriptor")
    _take_priority(nice)
    try:
        info = parse_index_info(path, pread_all(fds[0]))
        pieces = encode_arrays(info)
    except IndexInfoError as exc:
        text = str(exc).encode("utf-8", "replace")
        pieces = [ANSWER_INVALID, MESSAGE_LENGTH.pack(len(text)), text]
    finally:
        for fd in fds:
            os.close(fd)
    for piece in pieces:
        sock.sendall(piece)
    return True


#: Resident size above which the parse server starts afresh after an answer.
SERVER_MAX_RESIDENT = 96 << 20


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return SERVER_MAX_RESIDENT + 1  # unknown: start afresh to be safe


def serve(fd: int) -> int:
    """Answer requests on the socket ``fd`` until it closes (the daemon's process ended).

    Parsing a million entries leaves hundreds of MB in this process's heap, which a long-lived
    helper should not keep: after such an answer the server executes itself afresh.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent; we end at EOF
    sock = socket.socket(fileno=fd)
    while True:
        if not answer(sock):
            return 0
        if _resident_bytes() > SERVER_MAX_RESIDENT:
            break
    os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-I", os.path.abspath(__file__), "--serve", str(fd)])
    return 0  # not reached


if __name__ == "__main__":
    if sys.argv[1:2] != ["--serve"] or len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} --serve <socket fd>")
    sys.exit(serve(int(sys.argv[2])))
