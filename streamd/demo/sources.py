"""Image files that PyPI packages ship, fetched with pip into a download cache.

The demo must work on a fresh machine with no model hoster or test data: its faces come from the
test images inside the ``face_recognition`` 1.3.0 source package, the images inside the
``insightface`` 2.1 source package and scikit-image's astronaut (from its wheel). Each is fetched
with ``pip download`` (the ordinary client, honouring the user's pip configuration), kept in a
cache directory, and read straight from the archive: nothing is installed.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamd.errors import StreamdError


class DemoDataUnavailable(StreamdError):
    """A package the demo takes its images from could not be fetched or lacks an expected file."""


@dataclass(frozen=True)
class PackageSource:
    """One pinned PyPI release the demo reads files from.

    ``kind`` is ``sdist`` when the files are only in the source archive (test images) and
    ``wheel`` when the built wheel holds them (scikit-image's data files).
    """

    name: str
    version: str
    kind: Literal["sdist", "wheel"]
    licence: str
    homepage: str
    #: Archive members holding the package's licence text, copied into ATTRIBUTION.txt.
    licence_files: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def archive_stem(self) -> str:
        """The file-name prefix pip gives this release (before name normalisation)."""
        return f"{self.name}-{self.version}"


FACE_RECOGNITION = PackageSource(
    name="face_recognition",
    version="1.3.0",
    kind="sdist",
    licence="MIT (Copyright (c) 2017, Adam Geitgey)",
    homepage="https://github.com/ageitgey/face_recognition",
    licence_files=("face_recognition-1.3.0/LICENSE",),
)
INSIGHTFACE = PackageSource(
    name="insightface",
    version="2.1",
    kind="sdist",
    licence="MIT for the library code (README.md: 'The library code is released under the MIT License')",
    homepage="https://github.com/deepinsight/insightface",
)
SCIKIT_IMAGE = PackageSource(
    name="scikit-image",
    version="0.26.0",
    kind="wheel",
    licence="BSD-3-Clause (scikit-image); its data files carry the notes below",
    homepage="https://scikit-image.org",
    licence_files=("scikit_image-0.26.0.dist-info/LICENSE.txt",),
)


@dataclass(frozen=True)
class PackageFile:
    """One file inside a package archive, with what is known about where the picture comes from."""

    package: PackageSource
    member: str
    note: str

    @property
    def installed_path(self) -> str:
        """The file's path relative to site-packages when the package is installed."""
        if self.package.kind == "sdist":
            return self.member.split("/", 1)[1]
        return self.member

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


def _normalise(name: str) -> str:
    """Lower case with runs of ``-``, ``_`` and ``.`` as one ``_`` (sdist and wheel names differ)."""
    return re.sub(r"[-_.]+", "_", name.lower())


def find_archive(source: PackageSource, download_dir: Path) -> Path | None:
    """The already downloaded archive of ``source`` in ``download_dir``, if any."""
    if not download_dir.is_dir():
        return None
    suffixes = (".tar.gz", ".zip") if source.kind == "sdist" else (".whl",)
    stem = _normalise(source.archive_stem)
    for path in sorted(download_dir.iterdir()):
        name = _normalise(path.name)
        # "insightface_2_1_tar_gz" matches 2.1; "insightface_2_10_tar_gz" must not.
        if path.name.lower().endswith(suffixes) and name.startswith(stem + "_"):
            return path
    return None


def fetch_archive(source: PackageSource, download_dir: Path, *, timeout_s: float = 600.0) -> Path:
    """The archive of ``source``, downloaded with ``pip download`` unless already cached.

    Raises DemoDataUnavailable with pip's last error line when the index cannot be reached.
    """
    cached = find_archive(source, download_dir)
    if cached is not None:
        return cached
    download_dir.mkdir(parents=True, exist_ok=True)
    binary = ["--no-binary", ":all:"] if source.kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", *binary,
        "--disable-pip-version-check", "--quiet", "--dest", str(download_dir), source.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DemoDataUnavailable(
            f"pip download {source.requirement}: no answer from the package index in {timeout_s:.0f} s"
        ) from None
    archive = find_archive(source, download_dir)
    if proc.returncode != 0 or archive is None:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["no archive was saved"]
        raise DemoDataUnavailable(
            f"pip download {source.requirement} into {download_dir} failed: {errors[-1]}"
        )
    return archive


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` inside a .tar.gz sdist or a .whl/.zip archive."""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            extracted = tf.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            return extracted.read()
    except KeyError:
        raise DemoDataUnavailable(f"{archive}: has no file {member}") from None
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise DemoDataUnavailable(f"{archive}: damaged archive ({exc}); delete it to download again") from None


def installed_file(file: PackageFile) -> tuple[bytes, importlib.metadata.Distribution] | None:
    """The file's bytes and the installed distribution when the package is installed with the file."""
    try:
        dist = importlib.metadata.distribution(file.package.name)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(file.installed_path)))
    if not path.is_file():
        return None
    return path.read_bytes(), dist


def installed_licence(dist: importlib.metadata.Distribution) -> str | None:
    """The licence file(s) an installed distribution carries in its metadata directory."""
    texts = []
    for entry in dist.files or ():
        name = entry.name.upper()
        if ".dist-info" in str(entry) and name.startswith(("LICENSE", "LICENCE", "COPYING")):
            try:
                texts.append(Path(str(dist.locate_file(entry))).read_text(encoding="utf-8", errors="replace").strip())
            except OSError:
                continue
    return "\n\n".join(texts) or None


@dataclass(frozen=True)
class FetchedFile:
    """A package file's bytes and where they were read from (for ATTRIBUTION.txt)."""

    file: PackageFile
    data: bytes
    origin: str


class PackageFiles:
    """Reads package files from installed packages or from archives fetched into ``download_dir``."""

    def __init__(self, download_dir: Path, *, use_installed: bool = True) -> None:
        self.download_dir = Path(download_dir)
        self.use_installed = use_installed
        self._archives: dict[PackageSource, Path] = {}
        self._installed: dict[PackageSource, importlib.metadata.Distribution] = {}
        self.fetched: dict[str, FetchedFile] = {}

    def archive(self, source: PackageSource) -> Path:
        if source not in self._archives:
            self._archives[source] = fetch_archive(source, self.download_dir)
        return self._archives[source]

    def prefetch(self, files: Iterable[PackageFile]) -> None:
        """Download, in parallel, the archives of the files that no installed package provides.

        pip prepares each source archive's metadata in a fresh build environment (seconds each),
        so fetching the packages side by side halves a first run's wait.
        """
        needed = {f.package for f in files if not (self.use_installed and installed_file(f) is not None)}
        needed -= set(self._archives)
        if not needed:
            return
        with ThreadPoolExecutor(max_workers=len(needed)) as pool:
            futures = {source: pool.submit(fetch_archive, source, self.download_dir) for source in needed}
        for source, future in futures.items():
            self._archives[source] = future.result()  # re-raises the first DemoDataUnavailable

    def read(self, file: PackageFile) -> bytes:
        """The bytes of ``file``; remembered for the attribution."""
        if file.member in self.fetched:
            return self.fetched[file.member].data
        found = installed_file(file) if self.use_installed else None
        if found is not None:
            data, dist = found
            self._installed[file.package] = dist
            origin = f"installed package {file.package.name} {dist.version}: {file.installed_path}"
        else:
            archive = self.archive(file.package)
            data = read_member(archive, file.member)
            origin = f"{archive.name}: {file.member}"
        self.fetched[file.member] = FetchedFile(file, data, origin)
        return data

    def licence_texts(self) -> dict[PackageSource, str]:
        """The licence files of every package a picture was read from."""
        texts: dict[PackageSource, str] = {}
        for source, dist in self._installed.items():
            text = installed_licence(dist)
            if text:
                texts[source] = text
        for source, archive in self._archives.items():
            parts = []
            for member in source.licence_files:
                try:
                    parts.append(read_member(archive, member).decode("utf-8", "replace").strip())
                except DemoDataUnavailable:
                    continue
            if parts:
                texts[source] = "\n\n".join(parts)
        return texts


def attribution_text(files: PackageFiles, extra_notes: list[str] | None = None) -> str:
    """ATTRIBUTION.txt: which package each picture came from, the licences and the notes."""
    lines = [
        "streamd demo data: where every picture comes from",
        "=" * 50,
        "",
        "These files were read from PyPI packages at demo time; none of them is part of streamd's",
        "repository. Licences below are those the packages declare; rights in a photograph itself",
        "stay with its holder, and the demo output is meant for local testing only.",
        "",
    ]
    by_package: dict[PackageSource, list[FetchedFile]] = {}
    for fetched in files.fetched.values():
        by_package.setdefault(fetched.file.package, []).append(fetched)
    for source, fetched_files in by_package.items():
        lines += [f"{source.name} {source.version} ({source.homepage})", f"  licence: {source.licence}"]
        for fetched in fetched_files:
            lines.append(f"  - {fetched.origin}")
            lines.append(f"      {fetched.file.note}")
        lines.append("")
    for note in extra_notes or []:
        lines += [note, ""]
    for source, text in files.licence_texts().items():
        lines += [f"---- licence file of {source.name} {source.version} ----", text, ""]
    return "\n".join(lines).rstrip() + "\n"
