"""What the page needs to train in the browser, served: its rules, MNIST, and a home for its runs.

    app.include_router(uploads.router)          # before /static is mounted, so these paths win
    app.add_middleware(uploads.CrossOriginIsolation)

- `GET /static/page.json`: TrainConfig's rules for the page (`browser.rules.page_document`).
- `GET /static/mnist/index.json` and `GET /static/mnist/FILE`: the MNIST asset
  (`browser.mnist_asset`) built once from the data this server loads; the index is never cached
  (it names the files), each file is named by its content and cached for a year.
- `POST /api/runs` (the operator, same site): a run trained in the page (the JSON document
  of `browser.page_runs`) becomes a run folder here: 201 `{"run": NAME}`; 409 with a sentence if
  that run was kept already (nothing is written again) or was trained on other data; 422 for a
  document that is not a page run.

`CrossOriginIsolation` sends COOP/COEP with the page and its files, so the page is cross-origin
isolated and the browser engine may use threads (SharedArrayBuffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from digitlab import data
from digitlab.browser import mnist_asset, page_runs, rules
from digitlab.serve import access

# The largest page run accepted: the intermediate net's final weights are about 0.3 MB as base64.
MAX_RUN_BYTES = 4 * 1024 * 1024
ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
]

router = APIRouter()


async def read_json(request: Request, what: str) -> tuple[dict, int]:
    """The request's body as a JSON object, and its size: 413 over MAX_RUN_BYTES, 400 if not JSON, 422 for a
    non-finite number (NaN, Infinity) or anything but an object. `what` names the body in the 413's sentence
    ("A page run", "A submission"). Used by POST /api/runs and by the classroom's submissions."""
    body = await request.body()
    if len(body) > MAX_RUN_BYTES:
        raise HTTPException(413, f"{what} may be at most {MAX_RUN_BYTES} bytes; this one is {len(body)}.")
    try:
        document = json.loads(body, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise HTTPException(400, f"The body is not JSON ({error}); the page sends a JSON object.") from None
    if not isinstance(document, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    return document, len(body)


def _no_constant(name: str):
    raise HTTPException(422, f"Every number must be finite; the JSON holds {name}.")


@contextlib.contextmanager
def page_run_errors():
    """A page run's refusals as answers: kept already or trained on other data 409, not a page run 422."""
    try:
        yield
    except (page_runs.AlreadySaved, page_runs.OtherData) as error:
        raise HTTPException(409, str(error)) from None
    except page_runs.PageRunError as error:
        raise HTTPException(422, str(error)) from None


class CrossOriginIsolation:
    """ASGI middleware: COOP same-origin and COEP require-corp on the page and its files (`/`, `/static/...`).

    Not on /docs: its Swagger UI loads scripts from a CDN, which COEP would block."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == "/" or scope["path"].startswith("/static/")):
            await self.app(scope, receive, send)
            return

        async def send_isolated(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *ISOLATION_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_isolated)


def loaded_data(request: Request) -> data.Loaded:
    """MNIST as the server loaded it; a DataError (no MNIST here) is the app's 503 (`app._digitlab_error`)."""
    home = request.app.state.runs_home
    if home is None:
        raise HTTPException(404, "This server keeps no runs (it was started without a runs folder).")
    return home.loaded()


async def _asset(request: Request) -> dict[str, bytes]:
    """The MNIST asset's files, built once (about a second) from the server's data."""
    state = request.app.state
    if getattr(state, "mnist_asset_lock", None) is None:
        state.mnist_asset_lock = asyncio.Lock()
    async with state.mnist_asset_lock:
        if getattr(state, "mnist_asset", None) is None:
            loaded = await run_in_threadpool(loaded_data, request)
            state.mnist_asset = await run_in_threadpool(mnist_asset.build, loaded.arrays)
    return state.mnist_asset


@router.get("/static/page.json", include_in_schema=False)
async def page_document():
    """page.json: TrainConfig's rules for the page (`browser.rules.page_document`), never cached."""
    return JSONResponse(rules.page_document(), headers={"Cache-Control": "no-cache"})


@router.get("/static/mnist/{name}", include_in_schema=False)
async def mnist_file(name: str, request: Request):
    """A file of the MNIST asset: the index never cached, each data file (named by its content) for a year."""
    files = await _asset(request)
    if name not in files:
        raise HTTPException(404, f"No MNIST file {name!r}; the page reads the names from mnist/index.json.")
    if name == mnist_asset.INDEX_FILE:
        return Response(files[name], media_type="application/json", headers={"Cache-Control": "no-cache"})
    return Response(
        files[name],
        media_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.post(
    "/api/runs",
    status_code=201,
    dependencies=[Depends(access.require_operator)],
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The page run's JSON document (digitlab.browser.page_runs says what it holds).",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["format", "version", "run_id", "config", "history", "weights", "status"],
                        "properties": {
                            "format": {"const": page_runs.FORMAT},
                            "version": {"const": page_runs.FORMAT_VERSION},
                            "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                            "config": {"type": "object"},
                            "history": {"type": "object"},
                            "weights": {"type": "array"},
                            "status": {"enum": ["complete", "interrupted"]},
                        },
                    }
                }
            },
        }
    },
    responses={
        400: {"description": "The body is not JSON."},
        409: {"description": "This run was kept already, or it was trained on other MNIST arrays."},
        413: {"description": f"Over {MAX_RUN_BYTES // 1024**2} MB."},
        422: {"description": "Not a page run, or a bad config, history or weights."},
    },
)
async def upload_run(request: Request):
    """Keeps a run trained in the page as an ordinary run folder; 201 {"run": NAME}."""
    document, _ = await read_json(request, "A page run")
    loaded = await run_in_threadpool(loaded_data, request)
    runs_dir = request.app.state.runs_home.runs_dir
    lock = getattr(request.app.state, "upload_lock", None)
    if lock is None:
        lock = request.app.state.upload_lock = asyncio.Lock()
    async with lock:  # Two copies of one run sent at once: the second finds the first's folder.
        with page_run_errors():
            run = await run_in_threadpool(page_runs.save_page_run, document, runs_dir, loaded)
    return JSONResponse({"run": run.name}, status_code=201)
