"""Podium's error tree and the one JSON error shape of the API.

Every error a user can see carries a Connect error code, an HTTP status and a
message that says what went wrong and how to fix it. The API renders all of
them as ``{"code": int, "error": str, "payload": null}``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to an API client."""

    def __init__(
        self, status: int, code: int, message: str, payload: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.payload = payload
        self.headers = headers or {}  # sent with the answer (Retry-After, ...)

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "error": self.message, "payload": self.payload}


# Constructors for the Connect codes we use (reference/connect-api.md §1).
def internal(message: str = "An internal error occurred; the server log has the details.") -> ApiError:
    return ApiError(500, 1, message)


def backend_unavailable(what: str, message: str, status: int = 503) -> ApiError:
    """The execution backend (a Kubernetes API server) refused or could not be reached;
    nothing was changed. ``message`` is the backend's user-safe one."""
    return ApiError(status if status >= 500 else 503, 1, f"{what} could not be done now: {message}")


def unsupported_endpoint(path: str) -> ApiError:
    return ApiError(404, 2, f"The requested endpoint {path} does not exist.")


def invalid_id(what: str, value: str) -> ApiError:
    return ApiError(400, 3, f"The {what} id {value!r} is not valid.")


def not_found(what: str, value: str) -> ApiError:
    return ApiError(404, 4, f"The requested {what} {value!r} does not exist.")


def forbidden(message: str = "You do not have permission to perform this operation.") -> ApiError:
    return ApiError(403, 22, message)


def auth_required() -> ApiError:
    return ApiError(
        401, 24, "This operation requires authentication: send 'Authorization: Key <api key>'."
    )


def bad_credentials() -> ApiError:
    return ApiError(401, 30, "The API key or credentials are not valid.")


def too_many_attempts(message: str, retry_after_seconds: int) -> ApiError:
    """429 for credentials tried too often; Connect has no code for it, so the one of bad
    credentials (30) says what kind of problem it is."""
    return ApiError(429, 30, message, headers={"Retry-After": str(retry_after_seconds)})


def name_exists(name: str) -> ApiError:
    return ApiError(409, 26, f"You already own content named {name!r}; choose another name.")


def invalid_json(message: str) -> ApiError:
    return ApiError(400, 121, f"The request body is not valid JSON: {message}")


def bad_request(message: str, code: int = 3) -> ApiError:
    return ApiError(400, code, message)
