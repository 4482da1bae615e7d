"""Error responses in ThingsBoard's shape: `{status, message, errorCode, timestamp}`.

Handlers raise `ApiError(status, message)`; FastAPI's request validation errors become
HTTP 400 with a message naming each bad field (TBMQ answers 400, not 422). Error codes
are ThingsBoard's: 2 general, 10 authentication, 11 token expired, 20 permission denied,
30 bad request parameters, 32 item not found.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

GENERAL = 2
AUTHENTICATION = 10
JWT_TOKEN_EXPIRED = 11
PERMISSION_DENIED = 20
BAD_REQUEST_PARAMS = 30
ITEM_NOT_FOUND = 32

_DEFAULT_CODES = {
    400: BAD_REQUEST_PARAMS,
    401: AUTHENTICATION,
    403: PERMISSION_DENIED,
    404: ITEM_NOT_FOUND,
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = (
            error_code if error_code is not None else _DEFAULT_CODES.get(status, GENERAL)
        )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, BAD_REQUEST_PARAMS)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, ITEM_NOT_FOUND)


def error_body(status: int, message: str, error_code: int) -> dict[str, object]:
    return {
        "status": status,
        "message": message,
        "errorCode": error_code,
        "timestamp": int(time.time() * 1000),
    }


def _field(loc: tuple[object, ...] | list[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            error_body(exc.status, exc.message, exc.error_code), exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        message = "; ".join(problems) or "invalid request"
        return JSONResponse(error_body(400, message, BAD_REQUEST_PARAMS), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _DEFAULT_CODES.get(exc.status_code, GENERAL)
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code), exc.status_code)
