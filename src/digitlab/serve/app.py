"""The web server behind `digitlab serve [RUN]`: the page and its HTTP API on FastAPI and uvicorn.

    from digitlab.serve import app as serving
    app = serving.create_app(model, run_name="shallow-1")   # a FastAPI app (tests use it directly)
    app = serving.create_app(runs_dir="runs")               # ... that also keeps runs (serve/live.py)
    serving.serve(model, host="127.0.0.1", port=8000, run_name="shallow-1", runs_dir="runs")

Endpoints here (the runs' in `live`, the page's MNIST and kept runs in `uploads`, the tokens in `access`):

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
bodies over 5 MB (413, from Content-Length and again while reading; the
body is read to its end, up to DRAIN_LIMIT_BYTES, before the answer, so that clients
which do not wait for `Expect: 100-continue` see the 413 rather than a reset),
pictures over 4096 pixels a side (413, before decoding), files that are not
pictures or are truncated (422), malformed JSON (400), wrong shapes, values out
of range, NaN or Infinity (422), other content types (415). Every response
carries `X-Process-Time-Ms`, the server's own time for the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Annotated

import keras
import numpy as np
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

import digitlab
from digitlab import data, errors, imaging, predict
from digitlab.serve import access, classroom, live, networks, openapi, uploads

STATIC_DIR = Path(__file__).parent / "static"
# Multipart framing adds a few hundred bytes around the file; allow for it.
MAX_BODY_BYTES = imaging.MAX_UPLOAD_BYTES + 64 * 1024
# A body over the limit is still read, and thrown away, up to this size before the 413 answer.
# Most clients (urllib, requests, browsers) send the whole body without waiting for an answer, and
# closing a socket that holds unread data makes the kernel reset the connection: such a client would
# see "connection reset by peer", never the 413. Past this size the server answers at once and closes
# (that client may see the reset), so a huge upload costs at most this much reading.
DRAIN_LIMIT_BYTES = 32 * 1024 * 1024
TIMING_HEADER = "X-Process-Time-Ms"
# Pictures up to this many pixels are prepared on the event loop; larger ones in a thread.
INLINE_PIXELS = 300 * 300
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


Pixel = Annotated[float, Field(ge=0, le=255)]
PixelRow = Annotated[list[Pixel], Field(min_length=imaging.FIELD, max_length=imaging.FIELD)]


class PixelsRequest(BaseModel):
    """The JSON form of `POST /api/predict`; strict: numbers only, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pixels: list[PixelRow] = Field(
        min_length=imaging.FIELD,
        max_length=imaging.FIELD,
        description="28 rows of 28 numbers 0-255, ink high, as MNIST.",
    )
    prepare: bool = Field(False, description="Centre and scale the pixels like a picture first.")


class _GuardAndTime:
    """ASGI middleware: refuses bodies whose Content-Length is over the limit (413) and stamps every
    response with the time the server spent on it."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def send_with_time(message):
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", [])) + [
                    (TIMING_HEADER.lower().encode(), f"{elapsed:.3f}".encode())
                ]
                message = {**message, "headers": headers}
            await send(message)

        headers = dict(scope["headers"])
        if b"content-length" in headers:
            try:
                length = int(headers[b"content-length"])
            except ValueError:
                length = -1
            if length < 0:
                response = JSONResponse(
                    {"detail": "The Content-Length header is not a valid size."},
                    status_code=400,
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send_with_time)
                return
            if length > self.limit:
                # A client that waits for "100 Continue" (curl) has sent nothing yet: answer now and close;
                # it never sends the body. Any other client is sending it: read it first (DRAIN_LIMIT_BYTES).
                waiting = headers.get(b"expect", b"").lower() == b"100-continue"
                drained = not waiting and length <= DRAIN_LIMIT_BYTES and await _drain(receive)
                response = JSONResponse(
                    {"detail": _too_large(f"is {length} bytes")},
                    status_code=413,
                    headers=None if drained else {"Connection": "close"},
                )
                await response(scope, receive, send_with_time)
                return
        await self.app(scope, receive, send_with_time)


def _too_large(size: str) -> str:
    return f"The request body {size}; the limit is {imaging.MAX_UPLOAD_BYTES} bytes (5 MB). Send a smaller picture."


async def _drain(receive) -> bool:
    """Reads the rest of a request body and throws it away; False when the client left or the
    body ran past DRAIN_LIMIT_BYTES (then the connection must be closed)."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        size += len(message.get("body", b""))
        if size > DRAIN_LIMIT_BYTES:
            return False
        if not message.get("more_body", False):
            return True


async def _read_body(request: Request) -> bytes:
    """The request body. One over the limit (a chunked upload declares no length, so it is counted
    as it comes) is refused with 413 once it has been read to its end or to DRAIN_LIMIT_BYTES."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_LIMIT_BYTES:
            break
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
    if size > DRAIN_LIMIT_BYTES:
        raise HTTPException(413, _too_large(f"is over {DRAIN_LIMIT_BYTES} bytes"), headers={"Connection": "close"})
    if size > MAX_BODY_BYTES:
        raise HTTPException(413, _too_large(f"is {size} bytes"))
    return b"".join(chunks)


def _reject_constant(name: str):
    raise HTTPException(422, f"Every pixel must be a finite number 0-255; the JSON holds {name}.")


def _describe_pixels_error(errors: list[ErrorDetails]) -> str:
    """One sentence for pydantic's errors about a JSON body: the first in the order a reader checks
    it (the object and its "pixels" key, unknown keys, "prepare", then the pixels, outermost first)."""

    def rank(error):
        order = {"model_type": 0, "missing": 0, "extra_forbidden": 1}.get(error["type"])
        if order is None:
            order = 2 if error["loc"] == ("prepare",) else 2 + len(error["loc"])
        return order

    error = min(errors, key=rank)
    kind, location, value = error["type"], error["loc"], error["input"]
    if kind in ("model_type", "missing"):
        return 'The JSON must be an object with a "pixels" key holding 28 rows of 28 numbers 0-255.'
    if kind == "extra_forbidden":
        unknown = sorted(str(error["loc"][0]) for error in errors if error["type"] == "extra_forbidden")
        return f'Unknown key(s) {", ".join(unknown)}; the JSON may hold only "pixels" and "prepare".'
    if location == ("prepare",):
        return f'"prepare" must be true or false; got {value!r}.'
    if len(location) == 1:
        found = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        return f'"pixels" must be a list of 28 rows; got {found}.'
    if len(location) == 2:
        found = f"{len(value)} values" if isinstance(value, list) else f"a {type(value).__name__}"
        return f'Row {location[1]} of "pixels" must hold 28 numbers; it holds {found}.'
    where = f"pixels[{location[1]}][{location[2]}]"
    if kind == "float_type" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{where} is {json.dumps(value)}; every pixel must be a number 0-255."
    return f"{where} is {value}; every pixel must lie in 0-255."  # Also a whole number too large for a float.


def pixels_from_json(body: bytes) -> tuple[np.ndarray, bool]:
    """Parses `{"pixels": [[...]], "prepare": false}` and checks it against PixelsRequest; raises
    HTTPException saying what is wrong (400 for JSON that does not parse, 422 for the rest)."""
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, f'The body is not valid JSON ({error}). Send {{"pixels": [[...], ...]}}.') from None
    except RecursionError:
        raise HTTPException(400, 'The JSON is nested too deeply. Send {"pixels": [[...], ...]}.') from None
    try:
        request = PixelsRequest.model_validate(document)
    except ValidationError as error:
        raise HTTPException(422, _describe_pixels_error(error.errors())) from None
    return np.rint(np.array(request.pixels, dtype=np.float64)).astype(np.uint8), request.prepare


async def _file_from_multipart(request: Request, body: bytes) -> bytes:
    """The bytes of the uploaded file (field `file`, else the only file) in a multipart body."""

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=8).parse()
    except MultiPartException as error:
        raise HTTPException(
            400, f"The multipart body could not be read ({error.message}). Send one file in a field named 'file'."
        ) from None
    try:
        candidate = form.get("file")
        if candidate is None:
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            candidate = uploads[0] if uploads else None
        if not isinstance(candidate, UploadFile):
            raise HTTPException(422, "The multipart form holds no file; send the picture in a file field named 'file'.")
        return await candidate.read()
    finally:
        await form.close()


def _prepare_picture(data: bytes) -> np.ndarray:
    if len(data) > imaging.MAX_UPLOAD_BYTES:
        raise imaging.ImageTooLargeError(
            f"The file is {len(data)} bytes; the limit is {imaging.MAX_UPLOAD_BYTES} (5 MB)."
        )
    if not data:
        raise imaging.ImageError("The uploaded file is empty (0 bytes); send a PNG, JPEG, WebP, BMP or GIF picture.")
    return imaging.prepare_image(data)


async def _pixels_from_picture(data: bytes, large_pictures: asyncio.Semaphore) -> np.ndarray:
    """The 28x28 pixels of an uploaded picture, as the command line prepares them."""
    try:
        # A small picture (the page sends 140x140) takes well under a millisecond and is
        # read right here; a large one goes to a worker thread so other requests keep moving.
        size = imaging.peek_size(data)
        if size is not None and size[0] * size[1] <= INLINE_PIXELS:
            return _prepare_picture(data)
        async with large_pictures:
            return await run_in_threadpool(_prepare_picture, data)
    except imaging.ImageTooLargeError as error:
        raise HTTPException(413, str(error)) from None
    except imaging.ImageError as error:
        raise HTTPException(422, str(error)) from None


async def pixels_from_request(request: Request, large_pictures: asyncio.Semaphore) -> tuple[np.ndarray, str]:
    """The 28x28 uint8 pixels a `POST /api/predict` asks about, and their source ("pixels" or
    "image"), from its body as its Content-Type says: JSON pixels, a multipart upload, or a
    picture as the raw body. Raises HTTPException (a 4xx with a sentence) for anything else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request)
    if not body:
        raise HTTPException(
            422,
            "The request body is empty. Upload a picture in a field named 'file', or send {\"pixels\": [[...], ...]}.",
        )
    if content_type == "application/json" or content_type.endswith("+json"):
        pixels, prepare = pixels_from_json(body)
        if prepare:
            try:
                pixels = imaging.prepare_array(pixels)
            except imaging.ImageError as error:
                raise HTTPException(422, str(error)) from None
        return pixels, "pixels"
    if content_type == "multipart/form-data":
        return await _pixels_from_picture(await _file_from_multipart(request, body), large_pictures), "image"
    if content_type == "application/octet-stream" or content_type.startswith("image/"):
        return await _pixels_from_picture(body, large_pictures), "image"
    raise HTTPException(
        415,
        f"Unsupported Content-Type {content_type or '(none)'!r}. Upload a picture as multipart/form-data "
        "(field 'file') or image/*, or send application/json {\"pixels\": [[...], ...]}.",
    )


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
        s413="Body over 5 MB or picture over 4096 pixels a side.",
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
                "application/json": {"schema": PixelsRequest.model_json_schema()},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def predict_digit(
    request: Request,
    run: Annotated[str | None, Query(description="Ask this saved run's network instead of the served one.")] = None,
    epoch: Annotated[
        int | None,
        Query(ge=1, description="... as it was after this epoch (default: its last; alone: the served run's)."),
    ] = None,
):
    """Reads the digit in a picture (multipart field `file`, or the raw body) or in 28x28 JSON pixels."""
    served, home = _served(request), _home(request)
    pixels, source = await pixels_from_request(request, served.large_pictures)
    extra = {}
    if run is not None or epoch is not None:
        if home is None:
            raise HTTPException(404, "This server serves one network and keeps no runs; leave out run and epoch.")
        if run is None and not served.run_name:
            raise HTTPException(409, "No run is served here, so name the run whose epoch to ask: ?run=NAME&epoch=E.")
        run = served.run_name if run is None else run
        row, asked = home.networks.probabilities(run, epoch, pixels)
        extra = {"run": run, "epoch": asked}
    elif served.model is not None:
        row = predict.pixel_probabilities(served.model, pixels)[0]
    else:
        raise HTTPException(
            409, "No network is served yet: train one on the page and keep it here, then ask it with ?run=NAME."
        )
    answer = predict.describe(row)
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
    max_viewers: int = 100,
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
    app.state.trainer = home  # classroom.py's name for it (it calls .networks.forget), until it is renamed there.
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
    app.add_middleware(_GuardAndTime, limit=MAX_BODY_BYTES)
    app.add_middleware(access.RequireToken, access=permissions)
    app.add_middleware(uploads.CrossOriginIsolation)  # Threads for the browser engine.
    return app


async def _digitlab_error(request: Request, error: Exception):
    """A user's error met while answering (a run not there, damaged, without a network yet; MNIST not
    found) as a 4xx with its sentence (503 for the data: the server, not the request, lacks it)."""
    status = 404 if isinstance(error, networks.NotFound) else 503 if isinstance(error, data.DataError) else 409
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
    host: str = "127.0.0.1",
    port: int = 8000,
    run_name: str = "",
    access_log: bool = True,
    runs_dir=None,
    data_path=None,
    permissions: access.Access | None = None,
    max_viewers: int = 100,
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
