"""PaddleX serving's response envelope and errors, shared by every API endpoint.

Success: HTTP 200 and ``{logId, errorCode: 0, errorMsg: "Success", result}``.
Failure: ``{logId, errorCode, errorMsg}`` where errorCode equals the HTTP status, as PaddleX's
serving does (422 for a request that fails validation, with errorMsg a JSON list of
``{type, loc, msg}``; 500 "Internal server error" for anything unexpected, details only in the log).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

ResultT = TypeVar("ResultT")


def new_log_id() -> str:
    """A request id as PaddleX makes them (a UUID4), echoed in the response and our log lines."""
    return str(uuid.uuid4())


class NoResultResponse(BaseModel):
    """The envelope of an error (and of PaddleX's /health)."""

    logId: str = Field(description="UUID of the request.")
    errorCode: int = Field(description="Same as the HTTP status code; 0 on success.")
    errorMsg: str = Field(description="What went wrong, in one line.")


class ResultResponse(BaseModel, Generic[ResultT]):
    """The envelope of a successful operation."""

    logId: str = Field(description="UUID of the request.")
    result: ResultT
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"


class ApiError(Exception):
    """A request the server refuses with ``status`` and a one-line message the client reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, *, log_id: str | None = None, headers: dict | None = None) -> JSONResponse:
    """The PaddleX error envelope as a response."""
    body = NoResultResponse(logId=log_id or new_log_id(), errorCode=status, errorMsg=message)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def validation_message(errors: list[dict[str, Any]]) -> str:
    """PaddleX's errorMsg for a 422: a JSON list of {type, loc (dotted, [i] for items), msg}."""
    converted = []
    for err in errors:
        loc = ""
        for i, part in enumerate(err.get("loc", ())):
            if isinstance(part, int):
                loc += f"[{part}]"
            else:
                loc += ("." if i > 0 else "") + str(part)
        converted.append({"type": err.get("type", ""), "loc": loc, "msg": err.get("msg", "")})
    return json.dumps(converted)


#: The error responses every API operation documents in the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": NoResultResponse, "description": text}
    for code, text in (
        (401, "Missing or wrong bearer token"),
        (403, "Image URL not allowed"),
        (404, "Unknown indexKey"),
        (413, "Request body or image too large"),
        (422, "Invalid request, image or gallery"),
        (502, "Image URL could not be fetched"),
        (503, "No serving index or engine available"),
    )
}
