"""The face-recognition operations behind the PaddleX serving endpoints, without any HTTP.

Index keys follow PaddleX's serving: ``build`` makes a new feature library from image-label
pairs, stores it server-side under a fresh ``indexKey`` (a UUID) and returns the key; ``add``
and ``remove`` change the library stored under a key; ``infer`` searches the library of the key
given, or, without a key, the daemon's serving index (what the cameras use, from ``IndexHolder``).

Building or changing a keyed index never touches the serving index. Making a keyed index the
serving one is a separate, explicit step (``activate``), off unless ``http.allow_index_activation``
is set: the library is saved atomically to ``index.dir`` (so a restart keeps it, and PaddleX can
read it) and swapped into the holder. Keyed indexes live in memory, at most
``http.max_stored_indexes`` of them (least recently used forgotten first), and are lost on restart.

Ids follow PaddleX: the pairs of a build get ids 0..n-1 in request order, an add continues from
the highest id. So that id i is always pair i, a pair whose image yields no usable face fails the
whole request (422 naming the pair) instead of being skipped.
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from streamd.errors import FeatureLibraryError
from streamd.images import encode_jpeg
from streamd.index.holder import IndexHolder, IndexState
from streamd.index.library import FeatureLibrary
from streamd.recognize import FaceRecognition, recognize, resolve_threshold
from streamd.server.config import HttpSettings
from streamd.server.envelope import ApiError
from streamd.server.fetch import ImageLoader

log = logging.getLogger(__name__)

#: Makes ``library`` the serving index (``source`` names it); returns the new holder state.
Activator = Callable[[FeatureLibrary, str], IndexState]


@dataclass(frozen=True)
class DecisionSettings:
    """How a face's hits become a name (the ``index:`` settings that matter to the API)."""

    rec_threshold: float | None = None
    rec_topk: int = 5
    margin: float = 0.05
    multiple_faces: Literal["largest", "skip"] = "largest"


@dataclass
class _Keyed:
    """A library stored under an indexKey; its lock serialises changes and searches of it."""

    library: FeatureLibrary
    lock: threading.Lock = field(default_factory=threading.Lock)


class IndexStore:
    """API-built libraries by indexKey, least recently used forgotten beyond ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Keyed] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, library: FeatureLibrary) -> str:
        key = str(uuid.uuid4())
        with self._lock:
            self._entries[key] = _Keyed(library)
            while len(self._entries) > self.capacity:
                forgotten, _ = self._entries.popitem(last=False)
                log.info("http: forgot index %s (http.max_stored_indexes is %d)", forgotten, self.capacity)
        return key

    def get(self, key: str) -> _Keyed:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                raise ApiError(404, f"indexKey {key!r} is unknown (never built, or forgotten: keys live in memory)")
            self._entries.move_to_end(key)
            return entry

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)


class FaceApi:
    """Build, add, remove, infer and activate, with every failure an ApiError for the client.

    ``engine`` is a ``FaceEngine``. The API serialises its own engine calls; give it an engine
    instance the pipeline does not use concurrently if the backend is not thread-safe.
    """

    def __init__(
        self,
        engine: Any,
        holder: IndexHolder,
        *,
        http: HttpSettings,
        decision: DecisionSettings | None = None,
        activator: Activator | None = None,
        loader: ImageLoader | None = None,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.http = http
        self.decision = decision or DecisionSettings()
        self.activator = activator
        self.loader = loader or ImageLoader(http)
        self.store = IndexStore(http.max_stored_indexes)
        self._engine_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, engine: Any, holder: IndexHolder) -> "FaceApi":
        """The API as the daemon runs it: decisions from ``index:``, activation into ``index.dir``."""
        decision = DecisionSettings(
            rec_threshold=settings.index.rec_threshold,
            rec_topk=settings.index.rec_topk,
            margin=settings.index.margin,
            multiple_faces=settings.gallery.multiple_faces,
        )
        return cls(
            engine,
            holder,
            http=settings.http,
            decision=decision,
            activator=save_and_swap(settings.index.dir, engine, holder),
        )

    # ------------------------------------------------------------------ index operations

    def build(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, int, list[int]]:
        """A new keyed Flat/IP library from (image, label) pairs: (indexKey, vectors, ids)."""
        vectors, labels = self._enrol(pairs)
        library = FeatureLibrary.create(
            self.engine.dim, index_type="Flat", metric_type="IP", fingerprint=self.engine.fingerprint
        )
        ids = self._library_call(library.add, vectors, labels)
        key = self.store.put(library)
        log.info("http: built index %s with %d vectors", key, library.ntotal)
        return key, library.ntotal, ids

    def add(self, key: str, pairs: Sequence[tuple[str, str]]) -> tuple[int, list[int]]:
        """Add pairs to the keyed library: (vectors now, new ids)."""
        entry = self.store.get(key)  # 404 before any embedding work
        vectors, labels = self._enrol(pairs)
        with entry.lock:
            ids = self._library_call(entry.library.add, vectors, labels)
            return entry.library.ntotal, ids

    def remove(self, key: str, ids: Sequence[int]) -> int:
        """Remove ids from the keyed library (unknown ids ignored, as PaddleX): vectors left."""
        entry = self.store.get(key)
        with entry.lock:
            self._library_call(entry.library.remove, ids)
            return entry.library.ntotal

    def activate(self, key: str) -> IndexState:
        """Make the keyed library the daemon's serving index (saved to disk, then swapped in)."""
        if not self.http.allow_index_activation:
            raise ApiError(403, "index activation is off (set http.allow_index_activation: true)")
        if self.activator is None:
            raise ApiError(503, "index activation is not available in this process")
        entry = self.store.get(key)
        with entry.lock:
            if entry.library.ntotal == 0:
                raise ApiError(422, f"indexKey {key!r} holds no vectors; refusing to serve an empty index")
            try:
                return self.activator(entry.library, f"api:{key}")
            except FeatureLibraryError as exc:
                raise ApiError(500, f"activation failed: {exc}") from None

    # ------------------------------------------------------------------ infer

    def infer(
        self,
        image: str,
        *,
        key: str | None = None,
        det_threshold: float | None = None,
        rec_threshold: float | None = None,
        topk: int | None = None,
        visualize: bool | None = None,
    ) -> dict[str, Any]:
        """PaddleX's infer result: faces with bbox, recResults and score, and the annotated image."""
        pixels = self.loader.load(image, where="image")
        threshold = resolve_threshold(
            rec_threshold if rec_threshold is not None else self.decision.rec_threshold, self.engine
        )
        k = topk or self.decision.rec_topk
        if key is not None:
            entry = self.store.get(key)
            with entry.lock:
                faces = self._recognize(pixels, entry.library, threshold, k)
        else:
            library = self.holder.get()
            if library is None:
                raise ApiError(503, "no serving index is loaded; give an indexKey from /face-recognition-index-build")
            faces = self._recognize(pixels, library, threshold, k)
        if det_threshold is not None:
            faces = [f for f in faces if f.face.score >= det_threshold]
        result: dict[str, Any] = {"faces": [paddlex_face(f) for f in faces]}
        if visualize if visualize is not None else self.http.visualize:
            result["image"] = base64.b64encode(encode_jpeg(annotate(pixels, faces))).decode("ascii")
        return result

    # ------------------------------------------------------------------ helpers

    def _recognize(self, pixels: np.ndarray, library: Any, threshold: float, topk: int) -> list[FaceRecognition]:
        with self._engine_lock:
            return recognize(pixels, self.engine, library, threshold=threshold, margin=self.decision.margin, topk=topk)

    def _enrol(self, pairs: Sequence[tuple[str, str]]) -> tuple[np.ndarray, list[str]]:
        """One vector per pair, or an ApiError naming the first pair that gives none."""
        if len(pairs) > self.http.max_images_per_request:
            raise ApiError(
                413, f"{len(pairs)} images in one request; at most {self.http.max_images_per_request} "
                "(http.max_images_per_request)"
            )
        vectors, labels = [], []
        for i, (image, label) in enumerate(pairs):
            where = f"imageLabelPairs[{i}].image"
            pixels = self.loader.load(image, where=where)
            with self._engine_lock:
                results = list(self.engine.analyze(pixels))
            vectors.append(self._enrolment_vector(results, where))
            labels.append(label)
        matrix = np.stack(vectors) if vectors else np.empty((0, self.engine.dim), dtype=np.float32)
        return matrix, labels

    def _enrolment_vector(self, results: Sequence[Any], where: str) -> np.ndarray:
        if not results:
            raise ApiError(422, f"{where}: no face found")
        if len(results) > 1 and self.decision.multiple_faces == "skip":
            raise ApiError(422, f"{where}: {len(results)} faces, expected one (gallery.multiple_faces is skip)")
        chosen = max(results, key=lambda r: r.face.area)
        if chosen.vector is None:
            raise ApiError(422, f"{where}: the face failed the quality gate ({chosen.rejected})")
        return np.asarray(chosen.vector, dtype=np.float32)

    @staticmethod
    def _library_call(method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except FeatureLibraryError as exc:
            raise ApiError(422, str(exc)) from None


def paddlex_face(rec: FaceRecognition) -> dict[str, Any]:
    """One face as PaddleX reports it: recResults are the hits when a name was decided, else empty
    (PaddleX empties them when the best score is under rec_threshold; streamd also when the margin
    to another person is too thin, or the face failed the quality gate)."""
    hits = rec.matches if rec.label is not None else ()
    return {
        "bbox": [float(v) for v in rec.face.box],
        "recResults": [{"label": m.label, "score": float(m.score)} for m in hits],
        "score": float(rec.face.score),
    }


_GREEN = (0, 200, 0)
_GREY = (160, 160, 160)


def annotate(image: np.ndarray, faces: Sequence[FaceRecognition]) -> np.ndarray:
    """A copy of ``image`` with each face boxed and named (green) or marked unknown (grey)."""
    out = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 800.0)
    thickness = max(1, int(round(2 * scale)))
    for rec in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in rec.face.box)
        color = _GREEN if rec.label is not None else _GREY
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        text = f"{rec.label} {rec.decision.score:.2f}" if rec.label is not None and rec.decision else "unknown"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, thickness)
        top = max(0, y1 - th - base - 2)
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), thickness)
    return out


def save_and_swap(index_dir: Any, engine: Any, holder: IndexHolder) -> Activator:
    """An Activator writing to ``index_dir`` (atomically, under the library lock) and swapping in
    a fresh load of it, so the serving object is never one the API still holds."""
    from pathlib import Path

    from streamd.index.library import library_lock

    target = Path(index_dir)

    def activate(library: FeatureLibrary, source: str) -> IndexState:
        with library_lock(target):
            library.save(target)
            fresh = FeatureLibrary.load(target, expected_dim=engine.dim, expected_fingerprint=engine.fingerprint)
        return holder.swap(fresh, source)

    return activate
