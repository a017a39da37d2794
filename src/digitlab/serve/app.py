"""The web server behind `digitlab serve [RUN]`: the page and its HTTP API on FastAPI and uvicorn.

    from digitlab.serve import app as serving
    app = serving.create_app(model, run_name="shallow-1")   # a FastAPI app (tests use it directly)
    app = serving.create_app(runs_dir="runs")               # ... that also keeps runs (serve/live.py)
    serving.serve(model, host="127.0.0.1", port=8000, run_name="shallow-1", runs_dir="runs")

Endpoints here (the runs' in `live`, the page's MNIST and kept runs in `uploads`, the tokens in `access`;
the predictions' bodies are read by `bodies`):

- `GET /`: the page (static/: index.html, app.js, browser.js, live.js, charts.js, style.css, the
  engine; nothing from the network, so it works offline). The page trains in the browser; the
  server trains nothing.
- `POST /api/predict`: a picture as a multipart upload (field `file`) or as the raw
  body (`Content-Type: image/...`), or JSON `{"pixels": [[...28 numbers 0-255...] x 28]}`
  taken as an MNIST-style input as it is (add `"prepare": true` to centre and
  scale it like a picture first). Answers the digit, the ten probabilities and
  the 28x28 pixels the network saw. Pictures go through `imaging.prepare_image`,
  the same function the command line uses. `?run=NAME&epoch=E` asks that saved run's
  network as it was after epoch E instead of the served one.
- `GET /api/health`: the model and run being served, whether the server keeps runs or has a class, the caller's role.
- `/api/class/...` (`digitlab serve --class`): students' runs epoch by epoch and the class board (`classroom`).
- `GET /docs`, `GET /openapi.json`: FastAPI's API documentation.

Every bad request gets a 4xx JSON answer `{"detail": "..."}` that says what was
wrong (`openapi.ErrorBody`; /openapi.json names every status each route gives, see `openapi`):
bodies over `imaging.MAX_UPLOAD_BYTES` (413, from Content-Length and again while reading; the
body is read to its end, up to bodies.DRAIN_LIMIT_BYTES, before the answer, so that clients
which do not wait for `Expect: 100-continue` see the 413 rather than a reset),
pictures over `imaging.MAX_SIDE` pixels a side (413, before decoding), files that are not
pictures or are truncated (422), malformed JSON (400), wrong shapes, values out
of range, NaN or Infinity (422), other content types (415). Every response
carries `X-Process-Time-Ms`, the server's own time for the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Annotated

import keras
import numpy as np
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import digitlab
from digitlab import data, errors, imaging, predict
from digitlab.serve import access, bodies, classroom, live, openapi, runs_folder, settings, uploads

STATIC_DIR = Path(__file__).parent / "static"
LARGE_PICTURES_AT_ONCE = 2
PAGE_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class PredictResponse(BaseModel):
    """What `POST /api/predict` answers."""

    digit: int = Field(description="The most probable digit, 0-9.")
    probabilities: list[float] = Field(description="The ten softmax probabilities, for digits 0 to 9.")
    top3: list[dict] = Field(description="The three most probable digits with their probabilities.")
    pixels: list[list[int]] = Field(description="The 28x28 input the network saw, 0-255, ink high (as MNIST).")
    source: str = Field(description="'image' for an uploaded picture, 'pixels' for JSON pixels.")
    run: str | None = Field(None, description="The run asked, when ?run= named one.")
    epoch: int | None = Field(None, description="The epoch of its network that answered.")


class _Served:
    """What the routes serve: the model (None until a run is chosen), its run's name, the page, and the
    bound on large pictures."""

    def __init__(self, model: keras.Model | None, run_name: str):
        self.model, self.run_name = model, run_name
        self.page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        self.parameters = None if model is None else int(model.count_params())
        # A 4096x4096 picture needs about 0.3 GB and a second to prepare; a few at a time bounds memory.
        self.large_pictures = asyncio.Semaphore(LARGE_PICTURES_AT_ONCE)


def _served(request: Request) -> _Served:
    return request.app.state.served


def _home(request: Request) -> live.RunsHome | None:
    return request.app.state.runs_home


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request):
    """The page (static/index.html), never cached, with its Content-Security-Policy."""
    return HTMLResponse(
        _served(request).page, headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_SECURITY_POLICY}
    )


@router.get("/api/health")
async def health(request: Request):
    """The server is up; which model and run it serves, and whether it keeps runs (and lists them)."""
    served, home = _served(request), _home(request)
    model = served.model
    return {
        "status": "ok",
        "run": served.run_name,
        "model": None if model is None else model.name,
        "input_shape": None if model is None else list(model.input_shape[1:]),
        "parameters": served.parameters,
        "backend": keras.backend.backend(),
        "version": digitlab.__version__,
        "max_upload_bytes": imaging.MAX_UPLOAD_BYTES,
        "max_side": imaging.MAX_SIDE,
        "runs": home is not None,
        "class": getattr(request.app.state, "classroom", None) is not None,
        "role": access.role_of(request),
    }


@router.post(
    "/api/predict",
    response_model=PredictResponse,
    responses=openapi.errors(
        400,
        404,
        409,
        413,
        415,
        422,
        s400="Malformed JSON or multipart body.",
        s409="No network to ask yet (nothing served, or the run has no epoch yet), it diverged, or the run's "
        "files are damaged.",
        s413=f"Body over {imaging.MAX_UPLOAD_TEXT} or picture over {imaging.MAX_SIDE} pixels a side.",
        s415="A content type other than multipart, JSON or image/*.",
        s422="Not a picture, truncated, empty, or pixels of the wrong shape or range.",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    },
                },
                "application/json": {"schema": bodies.PixelsRequest.model_json_schema()},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def predict_digit(
    request: Request,
    run_name: Annotated[
        str | None, Query(alias="run", description="Ask this saved run's network instead of the served one.")
    ] = None,
    epoch: Annotated[
        int | None,
        Query(ge=1, description="... as it was after this epoch (default: its last; alone: the served run's)."),
    ] = None,
):
    """Reads the digit in a picture (multipart field `file`, or the raw body) or in 28x28 JSON pixels."""
    served, home = _served(request), _home(request)
    pixels, source = await bodies.pixels_from_request(request, served.large_pictures)
    extra = {}
    if run_name is not None or epoch is not None:
        if home is None:
            raise HTTPException(404, "This server serves one network and keeps no runs; leave out run and epoch.")
        if run_name is None and not served.run_name:
            raise HTTPException(409, "No run is served here, so name the run whose epoch to ask: ?run=NAME&epoch=E.")
        run_name = served.run_name if run_name is None else run_name
        row, asked = home.networks.probabilities(run_name, epoch, pixels)
        extra = {"run": run_name, "epoch": asked}
    elif served.model is not None:
        row = predict.pixel_probabilities(served.model, pixels)[0]
    else:
        raise HTTPException(
            409, "No network is served yet: train one on the page and keep it here, then ask it with ?run=NAME."
        )
    answer = predict.answer(row)
    answer["pixels"] = pixels.tolist()
    answer["source"] = source
    answer.update(extra)
    return JSONResponse(answer)


_PLACES = {"query": "The query parameter", "path": "The path parameter", "header": "The header", "body": "The body"}


async def _validation_error(request: Request, error: RequestValidationError):
    """A parameter of the wrong type or out of range, as one sentence (ErrorBody, not FastAPI's list)."""
    messages = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ())]
        place = _PLACES.get(location[0], "The request") if location else "The request"
        got = item.get("input")
        shown = "" if got is None else f", got {json.dumps(got, default=str)[:60]}"
        messages.append(f"{place} {'.'.join(location[1:])}: {item.get('msg', 'not valid')}{shown}".rstrip())
    return JSONResponse({"detail": "; ".join(messages or ["The request is not valid"]) + "."}, status_code=422)


async def _unexpected_error(request: Request, error: Exception):
    return JSONResponse(
        {"detail": f"Internal error ({type(error).__name__}); the server is still running."}, status_code=500
    )


def create_app(
    model: keras.Model | None = None,
    run_name: str = "",
    runs_dir=None,
    data_path=None,
    permissions: access.Access | None = None,
    max_viewers: int = settings.MAX_VIEWERS,
    class_settings: classroom.ClassSettings | None = None,
) -> FastAPI:
    """The FastAPI app serving `model` (a trained Keras model, or None); `run_name` is shown on the page.

    With `runs_dir`, the page keeps the runs it trains in that folder and shows its runs at any epoch,
    live while `digitlab train` trains them (`live`; at most `max_viewers` event streams at once);
    `permissions` (`access.Access`, open by default) says which tokens a request needs."""
    home = None if runs_dir is None else live.RunsHome(runs_dir, data_path, max_viewers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if home is not None:
            home.close()  # Ends the event streams.

    app = FastAPI(
        title="digitlab",
        version=digitlab.__version__,
        description="Reads handwritten digits with the Shallow Net of Deep Learning Illustrated (chapter 5), and "
        "shows its runs. Draw on the page at / (it trains the net in your browser), POST a picture or 28x28 pixels "
        "to /api/predict, or watch a run that `digitlab train` trains at GET /api/runs/NAME/events.",
        lifespan=lifespan,
    )
    app.state.served = _Served(model, run_name)
    app.state.runs_home = home
    app.state.classroom = (
        None if home is None or class_settings is None else classroom.Classroom(runs_dir, class_settings)
    )
    if model is not None:
        # Compiles the fast path now, so the first visitor does not wait for it.
        predict.pixel_probabilities(model, np.zeros((imaging.FIELD, imaging.FIELD), dtype=np.uint8))
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(errors.DigitlabError)(_digitlab_error)
    app.exception_handler(Exception)(_unexpected_error)
    app.include_router(router)
    app.include_router(uploads.router)  # Before /static is mounted: page.json and MNIST are built here.
    if home is not None:
        app.include_router(live.router)
    if app.state.classroom is not None:
        app.include_router(classroom.router)  # A class: students' pages send their runs (--class).
    permissions = permissions or access.Access()
    openapi.install(app, permissions)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(bodies.GuardAndTime, limit=bodies.MAX_BODY_BYTES)
    app.add_middleware(access.RequireToken, access=permissions)
    app.add_middleware(uploads.CrossOriginIsolation)  # Threads for the browser engine.
    return app


async def _digitlab_error(request: Request, error: Exception):
    """A user's error met while answering (a run not there, damaged, without a network yet; MNIST not
    found) as a 4xx with its sentence (503 for the data: the server, not the request, lacks it)."""
    status = 404 if isinstance(error, runs_folder.NotFound) else 503 if isinstance(error, data.DataError) else 409
    return JSONResponse({"detail": str(error)}, status_code=status)


class _Server(uvicorn.Server):
    """uvicorn's server, which first ends the event streams when it is told to stop: otherwise it would
    wait for the viewers' open streams before shutting down."""

    def __init__(self, config: uvicorn.Config, home: live.RunsHome | None):
        super().__init__(config)
        self.home = home

    async def shutdown(self, sockets=None):
        if self.home is not None:
            self.home.close()
        await super().shutdown(sockets)


def serve(
    model: keras.Model | None = None,
    host: str = settings.HOST,
    port: int = settings.PORT,
    run_name: str = "",
    access_log: bool = True,
    runs_dir=None,
    data_path=None,
    permissions: access.Access | None = None,
    max_viewers: int = settings.MAX_VIEWERS,
    class_settings: classroom.ClassSettings | None = None,
) -> None:
    """Runs the app on uvicorn until Ctrl-C. Loopback by default; another host needs the tokens of
    `permissions` (see `access`), and the links that carry them are printed."""
    permissions = permissions or access.Access.for_host(host)
    if class_settings is not None:
        permissions = permissions.with_students()
    app = create_app(model, run_name, runs_dir, data_path, permissions, max_viewers, class_settings=class_settings)
    every_interface = host in ("0.0.0.0", "::")
    shown_host = socket.gethostname() if every_interface else f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}/"
    what = run_name or (model.name if model is not None else f"the runs in {runs_dir}")
    print(f"digitlab: serving {what} at {base}  (API docs at /docs; Ctrl-C stops)")
    if not permissions.open:
        loopback = access.is_loopback(host)
        reach = "only this machine can reach it, and" if loopback else "reachable from other machines, so"
        print(
            f"Serving on {host}: {reach} every request needs a token.\n"
            f"  operator (keeps runs):     {permissions.link(base, access.OPERATOR)}\n"
            f"  view-only (watch, draw):   {permissions.link(base, access.VIEWER)}"
        )
        if permissions.student_token is not None:
            print(f"  students (train, send runs): {permissions.link(base, access.STUDENT)}")
        if every_interface:
            # In a container the host name is the container's: there the published port is the way in.
            local = f"http://127.0.0.1:{port}/"
            print(f"  on this machine (or a container's published port): {permissions.link(local, access.OPERATOR)}")
    # Python's own asyncio loop, not uvloop: measured with scripts/load_test.py (50 connections, PNG
    # uploads), uvloop gave the same throughput but a p99 of 108-117 ms against 65-71 ms.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=access_log, loop="asyncio", timeout_graceful_shutdown=5
    )
    _Server(config, app.state.runs_home).run()
