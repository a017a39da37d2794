"""Reading a request's body for `POST /api/predict`: the size guard, JSON pixels, a multipart upload or a
picture, each refused with a 4xx sentence (HTTPException) when it is not what the route takes.

    app.add_middleware(bodies.GuardAndTime, limit=bodies.MAX_BODY_BYTES)   # 413 by Content-Length; timing
    pixels, source = await bodies.pixels_from_request(request, large_pictures)

Pictures go through `imaging.prepare_image`, the function the command line uses; JSON pixels are
checked against `PixelsRequest` and the first error a reader would check is told in one sentence.

The upload limit (`imaging.MAX_UPLOAD_BYTES`) is one rule, told in one sentence (`too_large`), and
checked where each size is first known: the Content-Length a client declares (`GuardAndTime`,
before a byte is read), the bytes as they come (a chunked body declares none), and the file inside
a multipart body (the body's limit, MAX_BODY_BYTES, allows for the framing around it).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from digitlab import imaging

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


class GuardAndTime:
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
                    {"detail": too_large(f"is {length} bytes")},
                    status_code=413,
                    headers=None if drained else {"Connection": "close"},
                )
                await response(scope, receive, send_with_time)
                return
        await self.app(scope, receive, send_with_time)


def too_large(size: str, what: str = "request body") -> str:
    """The 413 sentence for a `what` whose size is `size` ("is 6000000 bytes"): the limit, and what to do."""
    return (
        f"The {what} {size}; the limit is {imaging.MAX_UPLOAD_BYTES} bytes ({imaging.MAX_UPLOAD_TEXT}). "
        "Send a smaller picture."
    )


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
        raise HTTPException(413, too_large(f"is over {DRAIN_LIMIT_BYTES} bytes"), headers={"Connection": "close"})
    if size > MAX_BODY_BYTES:
        raise HTTPException(413, too_large(f"is {size} bytes"))
    return b"".join(chunks)


def _reject_constant(name: str):
    raise HTTPException(422, f"Every pixel must be a finite number 0-255; the JSON holds {name}.")


def _pixels_error_sentence(errors: list[ErrorDetails]) -> str:
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
        raise HTTPException(422, _pixels_error_sentence(error.errors())) from None
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
        raise imaging.ImageTooLargeError(too_large(f"is {len(data)} bytes", what="file"))
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
