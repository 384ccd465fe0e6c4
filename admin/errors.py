"""One error shape for every 4xx and 5xx: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from conveyor.errors import DomainError

# Domain error codes whose HTTP status is not 422.
STATUS_OF_CODE = {
    "not_found": 404,
    "conflict": 409,
    "insufficient_stock": 409,
    "stock_conflict": 409,
    "illegal_transition": 409,
    "capture_in_progress": 409,
    "refund_refused": 409,
    "return_refused": 409,
    "period_closed": 409,
    "rate_limited": 429,
    "unauthenticated": 401,
    "forbidden": 403,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def from_domain_error(exc: DomainError) -> ApiError:
    headers = {}
    if "retry_after" in exc.details:
        headers["Retry-After"] = str(exc.details["retry_after"])
    return ApiError(STATUS_OF_CODE.get(exc.code, 422), exc.code, exc.message, exc.details,
                    headers)


def error_response(exc: ApiError) -> JSONResponse:
    body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)
