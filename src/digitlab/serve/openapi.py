"""What the API's answers look like, as /openapi.json says: the one error body, the statuses each route
documents, the tokens as security schemes, and the Allow header of a 405.

    from digitlab.serve import openapi
    @router.get("/api/runs/{name}", responses=openapi.errors(404, 409))   # each with ErrorBody's shape
    openapi.install(app, permissions)       # /openapi.json: the tokens, 401/403, our 422 shape

Every 4xx the server gives is one JSON object, `ErrorBody`: `detail`, a sentence saying what was
wrong and what to do. That includes 422 for a
parameter of the wrong type (FastAPI would answer its `HTTPValidationError` list; the server
answers a sentence, and the schema says so). Off loopback (`access`), every route may also answer
401 (no token) or 403 (a wrong one), and the schema names the three ways a token travels: the
`Authorization: Bearer` header, `?token=` and the page's cookie. A method a path does not have gets
405 with an `Allow` header that lists every method the path has (Starlette lists only those of the
first route it matched: `GET /api/runs` would hide `POST /api/runs`).
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match

from digitlab import imaging
from digitlab.serve import access

# What each status means wherever a route does not say more.
MEANINGS = {
    400: "The body, or a header, is malformed.",
    401: "This server is off loopback and the request carries no token.",
    403: "The token is not this server's, or this route needs the operator's token.",
    404: "No such run, or no record of that epoch.",
    409: "The run, or the server, is in a state that does not allow it (see `detail`).",
    413: f"The body is over {imaging.MAX_UPLOAD_TEXT}.",
    415: "A content type this route does not take.",
    422: "A parameter or a field is not allowed: `detail` says which and why.",
    429: "Too many requests from this client: wait and send again.",
    503: "The server cannot do it now (see `detail`).",
}
SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer TOKEN."},
    "token_query": {"type": "apiKey", "in": "query", "name": "token", "description": "The printed links' ?token=."},
    "token_cookie": {"type": "apiKey", "in": "cookie", "name": access.COOKIE, "description": "Set by a link."},
}


class ErrorBody(BaseModel):
    """Every 4xx answer of the API."""

    detail: str = Field(description="What was wrong, and what to do, in a sentence.")


def errors(*statuses: int, **descriptions: str) -> dict:
    """`responses=` for a route: each status with ErrorBody's shape and its meaning (MEANINGS, or
    `descriptions` keyed "s404" and so on)."""
    return {
        status: {"model": ErrorBody, "description": descriptions.get(f"s{status}", MEANINGS[status])}
        for status in statuses
    }


def install(app: FastAPI, permissions: access.Access) -> None:
    """Completes the app's /openapi.json (our 422 shape; with tokens, the schemes and 401/403 everywhere)
    and answers a 405 with every method of its path."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["ErrorBody"] = ErrorBody.model_json_schema()
        if not permissions.open:
            components["securitySchemes"] = SCHEMES
            schema["security"] = [{name: []} for name in SCHEMES]
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answers = operation.setdefault("responses", {})
                if "422" in answers and "HTTPValidationError" in str(answers["422"]):
                    answers["422"] = {"description": MEANINGS[422], "content": error}
                if not permissions.open:
                    for status in (401, 403):
                        answers.setdefault(str(status), {"description": MEANINGS[status], "content": error})
        for name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.exception_handler(HTTPException)(_http_error)  # FastAPI's HTTPException is Starlette's.


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app, scope) -> list[str]:
    """Every method some route of the app takes at this request's path (asked of each route as the
    router asks it, so routes included from another router count too)."""
    return [
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    ]


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    """FastAPI's and Starlette's HTTPException as ErrorBody; a 405 lists every method of the path."""
    headers = dict(getattr(error, "headers", None) or {})
    detail = error.detail
    if error.status_code == 405:
        methods = allowed_methods(request.app, request.scope)
        headers["Allow"] = ", ".join(methods)
        detail = f"{request.method} is not a method of {request.url.path}; it takes {', '.join(methods)}."
    elif not isinstance(detail, str) or detail == HTTPStatus(error.status_code).phrase:
        detail = _plain(error.status_code, request)
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers or None)


def _plain(status: int, request: Request) -> str:
    if status == 404:
        return f"Nothing is at {request.url.path}; /docs lists the API."
    return MEANINGS.get(status, HTTPStatus(status).phrase)
