"""The fixed split of a face folder into a *tuning* half and a *report* half, by person.

Every default streamd ships (recognition thresholds, the tracker's same-person gate, margins,
budgets) is chosen on the tuning half; ``streamd eval ident`` and ``streamd bench pipeline``
report on the report half unless told otherwise, so that the figures they print come from people
the defaults were never fitted to.

The rule (written down in docs/accuracy.md):

1. Folders that are one person under two names (:data:`SAME_PERSON`) form one *identity*, named
   by its first folder in sort order. Every other folder is an identity of its own.
2. An identity belongs to the tuning half when the first byte of
   ``sha256(f"{SPLIT_SEED}:{name}")`` is even, else to the report half.

Hashing each name (instead of shuffling the sorted list) keeps everyone's half fixed when people
are added to or removed from the folder: a person never moves from the report half into the
tuning half because somebody else was added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

#: The seed of the split. Changing it re-deals every person: never change it to improve a figure.
SPLIT_SEED = "streamd-split-1"

#: Folders known to hold the same person under another name (../shared/data/faces/SOURCES.md).
SAME_PERSON: tuple[frozenset[str], ...] = (
    frozenset({"deepface_id02", "Jennifer_Aniston"}),
    frozenset({"deepface_id12", "Leonardo_DiCaprio"}),
)

Half = Literal["tune", "report", "all"]
HALVES: tuple[str, ...] = ("tune", "report", "all")


def identity_of(folder: str, same_person: Sequence[frozenset[str]] = SAME_PERSON) -> str:
    """The identity a folder belongs to: the first name of its :data:`SAME_PERSON` group, or itself."""
    for group in same_person:
        if folder in group:
            return min(group)
    return folder


def half_of(identity: str, seed: str = SPLIT_SEED) -> Literal["tune", "report"]:
    """Which half an identity is in (see the module docstring)."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "report"


def group_folders(
    folders: Iterable[str], same_person: Sequence[frozenset[str]] = SAME_PERSON
) -> dict[str, list[str]]:
    """Identity -> its folders (sorted), for the given folder names."""
    out: dict[str, list[str]] = {}
    for folder in sorted(folders):
        out.setdefault(identity_of(folder, same_person), []).append(folder)
    return out


def select(names: Iterable[str], half: Half, seed: str = SPLIT_SEED) -> list[str]:
    """The folder names of ``half`` ("all": every one), sorted; same-person folders stay together."""
    names = sorted(names)
    if half == "all":
        return names
    if half not in ("tune", "report"):
        raise ValueError(f"half must be one of {', '.join(HALVES)}, not {half!r}")
    return [n for n in names if half_of(identity_of(n), seed) == half]


def merge_people(people: Mapping[str, list[Path]]) -> dict[str, list[Path]]:
    """``people`` (folder -> images) with same-person folders merged under their identity's name."""
    merged: dict[str, list[Path]] = {}
    for identity, folders in group_folders(people).items():
        merged[identity] = sorted((p for f in folders for p in people[f]), key=lambda p: (p.name, str(p)))
    return merged


def select_people(people: Mapping[str, list[Path]], half: Half, seed: str = SPLIT_SEED) -> dict[str, list[Path]]:
    """The identities of ``half`` with their images: same-person folders merged, then the half taken."""
    merged = merge_people(people)
    return {name: merged[name] for name in select(merged, half, seed)}


def identity_folders(root: Path, half: Half, seed: str = SPLIT_SEED) -> list[Path]:
    """The person folders under ``root`` that belong to ``half`` (same-person folders together)."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir())
    keep = set(select((p.name for p in folders), half, seed))
    return [p for p in folders if p.name in keep]
