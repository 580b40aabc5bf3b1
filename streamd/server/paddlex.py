"""PaddleX's face-recognition serving endpoints, with its request and response schemas.

The four operations and their fields are PaddleX's (``paddlex/inference/serving/schemas/
face_recognition.py``): ``buildIndex``, ``addImagesToIndex``, ``removeImagesFromIndex``, ``infer``.
Every response is PaddleX's envelope ``{logId, errorCode, errorMsg, result}``; errorCode is 0 on
success and the HTTP status otherwise (422 for invalid requests, images or gallery, 404 for an
unknown indexKey, 403 for a URL off the allow-list, 413 for size caps, 503 without an engine).

streamd additions, ignored by PaddleX clients: build and add return the new vector ``ids``
(``ids[i]`` belongs to ``imageLabelPairs[i]``), and ``hammingRadius`` is accepted but unused
(streamd's indexes are float, never binary). Endpoints run in FastAPI's thread pool, so a
slow embedding never blocks /metrics or /healthz.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from fastapi import FastAPI
from pydantic import BaseModel, Field, field_validator

from streamd.server.config import HttpSettings
from streamd.server.envelope import ERROR_RESPONSES, ResultResponse, new_log_id

BUILD_INDEX_ENDPOINT = "/face-recognition-index-build"
ADD_IMAGES_TO_INDEX_ENDPOINT = "/face-recognition-index-add"
REMOVE_IMAGES_FROM_INDEX_ENDPOINT = "/face-recognition-index-remove"
INFER_ENDPOINT = "/face-recognition-infer"
FACE_ENDPOINTS = (BUILD_INDEX_ENDPOINT, ADD_IMAGES_TO_INDEX_ENDPOINT, REMOVE_IMAGES_FROM_INDEX_ENDPOINT, INFER_ENDPOINT)

_IMAGE_DOC = "The URL of an image file the server may fetch (see http.allowed_url_prefixes), or the base64 of the file."
_INT64_MAX = 2**63 - 1
_FORBIDDEN_IN_LABEL = re.compile(r"[/+#\x00-\x1f\x7f]")


class ImageLabelPair(BaseModel):
    image: str = Field(description=_IMAGE_DOC)
    label: str = Field(
        min_length=1,
        max_length=256,
        description="The person's label. Not blank; no '/', '+', '#' or control characters (labels become "
        "MQTT topic levels).",
    )

    @field_validator("label")
    @classmethod
    def _label_is_a_topic_level(cls, label: str) -> str:
        if not label.strip():
            raise ValueError("label is blank")
        if _FORBIDDEN_IN_LABEL.search(label):
            raise ValueError("label must not contain '/', '+', '#' or control characters (it becomes an MQTT topic level)")
        return label


class BuildIndexRequest(BaseModel):
    imageLabelPairs: list[ImageLabelPair] = Field(min_length=1, description="Image-label pairs to index.")


class BuildIndexResult(BaseModel):
    indexKey: str = Field(description="Key of the new index, for the other operations.")
    imageCount: int = Field(description="Number of images (vectors) indexed.")
    ids: list[int] = Field(description="streamd: the vector id of each pair, in request order.")


class AddImagesToIndexRequest(BaseModel):
    imageLabelPairs: list[ImageLabelPair] = Field(min_length=1, description="Image-label pairs to add.")
    indexKey: str = Field(description="Key from buildIndex.")


class AddImagesToIndexResult(BaseModel):
    imageCount: int = Field(description="Number of images (vectors) now indexed.")
    ids: list[int] = Field(description="streamd: the vector id of each added pair, in request order.")


class RemoveImagesFromIndexRequest(BaseModel):
    ids: list[int] = Field(description="Ids of the vectors to remove (ids not in the index are ignored).")
    indexKey: str = Field(description="Key from buildIndex.")


class RemoveImagesFromIndexResult(BaseModel):
    imageCount: int = Field(description="Number of images (vectors) left.")


class InferRequest(BaseModel):
    image: str = Field(description=_IMAGE_DOC)
    indexKey: Optional[str] = Field(None, description="Key from buildIndex; omitted = the daemon's serving index.")
    detThreshold: Optional[float] = Field(
        None, allow_inf_nan=False, description="Faces with a lower detection score are left out."
    )
    recThreshold: Optional[float] = Field(
        None, allow_inf_nan=False, description="Minimum similarity for a name; omitted = index.rec_threshold."
    )
    hammingRadius: Optional[float] = Field(
        None, allow_inf_nan=False, description="Accepted for PaddleX compatibility; unused (no binary indexes)."
    )
    topk: Optional[int] = Field(None, ge=1, le=100, description="Hits per face; omitted = index.rec_topk.")
    visualize: Optional[bool] = Field(None, description="Return the annotated image; omitted = http.visualize.")


class RecResult(BaseModel):
    label: str
    score: float


class Face(BaseModel):
    bbox: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 of the face.")
    recResults: list[RecResult] = Field(description="Gallery hits, best first; empty when no name was decided.")
    score: float = Field(description="The detection score.")


class InferResult(BaseModel):
    faces: list[Face]
    image: Optional[str] = Field(None, description="The annotated image, JPEG, base64.")


class ActivateRequest(BaseModel):
    indexKey: str = Field(description="Key from buildIndex.")


def _pairs(items: list[ImageLabelPair]) -> list[tuple[str, str]]:
    return [(p.image, p.label) for p in items]


def add_face_routes(app: FastAPI, face_api: Any, settings: HttpSettings) -> None:
    """Mount the PaddleX operations and streamd's /api/index endpoints on ``app``."""
    common: dict[str, Any] = {"responses": ERROR_RESPONSES, "response_model_exclude_none": True}

    @app.post(BUILD_INDEX_ENDPOINT, operation_id="buildIndex", tags=["face recognition"], **common)
    def build_index(request: BuildIndexRequest) -> ResultResponse[BuildIndexResult]:
        """Build a feature index from image-label pairs; it is stored under the returned indexKey."""
        key, count, ids = face_api.build(_pairs(request.imageLabelPairs))
        return ResultResponse[BuildIndexResult](
            logId=new_log_id(), result=BuildIndexResult(indexKey=key, imageCount=count, ids=ids)
        )

    @app.post(ADD_IMAGES_TO_INDEX_ENDPOINT, operation_id="addImagesToIndex", tags=["face recognition"], **common)
    def add_images(request: AddImagesToIndexRequest) -> ResultResponse[AddImagesToIndexResult]:
        """Add images (their face vectors) to the index of indexKey."""
        count, ids = face_api.add(request.indexKey, _pairs(request.imageLabelPairs))
        return ResultResponse[AddImagesToIndexResult](
            logId=new_log_id(), result=AddImagesToIndexResult(imageCount=count, ids=ids)
        )

    @app.post(
        REMOVE_IMAGES_FROM_INDEX_ENDPOINT, operation_id="removeImagesFromIndex", tags=["face recognition"], **common
    )
    def remove_images(request: RemoveImagesFromIndexRequest) -> ResultResponse[RemoveImagesFromIndexResult]:
        """Remove vectors by id from the index of indexKey."""
        # Ids beyond int64 cannot be in a faiss index: drop them rather than overflow.
        ids = [i for i in request.ids if 0 <= i <= _INT64_MAX]
        count = face_api.remove(request.indexKey, ids)
        return ResultResponse[RemoveImagesFromIndexResult](
            logId=new_log_id(), result=RemoveImagesFromIndexResult(imageCount=count)
        )

    @app.post(INFER_ENDPOINT, operation_id="infer", tags=["face recognition"], **common)
    def infer(request: InferRequest) -> ResultResponse[InferResult]:
        """Detect and recognise faces in an image, against indexKey or the daemon's serving index."""
        result = face_api.infer(
            request.image,
            key=request.indexKey,
            det_threshold=request.detThreshold,
            rec_threshold=request.recThreshold,
            topk=request.topk,
            visualize=request.visualize,
        )
        return ResultResponse[InferResult](logId=new_log_id(), result=InferResult(**result))

    # ------------------------------------------------------------------ streamd's index endpoints

    @app.get("/api/index", tags=["index"], summary="The serving index and the API-built index keys")
    def index_state() -> dict[str, Any]:
        return {"serving": face_api.holder.state.to_dict(), "indexKeys": face_api.store.keys()}

    @app.post(
        "/api/index/activate",
        tags=["index"],
        summary="Make an API-built index the daemon's serving index (http.allow_index_activation)",
        responses=ERROR_RESPONSES,
    )
    def activate(request: ActivateRequest) -> dict[str, Any]:
        state = face_api.activate(request.indexKey)
        return {"serving": state.to_dict()}
