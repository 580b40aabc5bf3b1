"""The text of ``id_map.yaml``: YAML that PaddleX reads, written and read fast for large galleries.

PyYAML needs about 1.5 s to parse an id map of 100k entries (15 s for 1M), even with libyaml,
which would make every index reload slow. So streamd writes the small header with PyYAML and the
id map itself one ``  <id>: "<label>"`` line per vector, the label as a JSON string. A JSON string
is also a valid YAML double-quoted scalar (characters YAML forbids raw are escaped), so PaddleX's
YAML loader reads the same mapping. When reading, that exact shape is parsed with one
``json.loads``; any other file (PaddleX's own unquoted labels, hand edits) goes through PyYAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

ID_MAP_KEY = "id_map"

# Characters PyYAML's reader refuses raw (outside its printable set), plus NEL and the Unicode line and
# paragraph separators, which YAML would fold: written as \uXXXX escapes instead.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_LINE = re.compile(r'^  (-?\d+): ("(?:[^"\\\n]|\\.)*")$', re.MULTILINE)


def _quote(label: str) -> str:
    text = json.dumps(label, ensure_ascii=False)
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dump_index_info(header: dict[str, Any], id_map: dict[int, str]) -> str:
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
