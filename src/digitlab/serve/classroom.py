"""A class: every student's page trains its own network and sends its run here, epoch by epoch.

    digitlab serve --host 0.0.0.0 --class                 # prints the operator's, the students' and a view-only link
    app = serving.create_app(runs_dir="runs", class_settings=classroom.ClassSettings(cap_bytes=2 * 10**9))

The server trains nothing: a student's page trains in the browser (browser.js) and sends

- `POST /api/class/runs`: the run's settings (the head of `browser.page_runs`' document) and the
  name the student typed; 201 `{"run": NAME, "secret": SECRET}`. The run folder exists from now on,
  with the status "running".
- `POST /api/class/runs/NAME/epochs` (header `X-Run-Secret: SECRET`): one epoch's history row, its
  weights (recorded as epochs/epoch-NNNN.npz, what the page's slider opens) and, if the student drew
  some, the accuracy on their own handwriting; a closed laptop loses at most the epoch in progress.
  The same epoch sent twice (a retry) is answered 200 and written once.
- `POST /api/class/runs/NAME/finish` (the secret): the status ("complete" or "interrupted") and the
  final weights; the folder gets model.keras, checkpoint.npz, curves.png, metrics.json.

These are `page_runs.begin`, `add_epochs` and `finish`: the one-shot `POST /api/runs` is the
same three steps at once. Only the page that created a run holds its secret (the folder keeps its
SHA-256 in class.json), so students cannot write into each other's runs, and nothing here deletes.

Every submission is checked before anything is written (`page_runs`' checks: shapes, sizes, finite
numbers, the config's rules; the student's name; the run's name, which must match `RUN_NAME`, so no
path leaves the runs folder), and refused with a 4xx sentence: 403 for a view-only link or a wrong
secret, 413 over the size of one run or over the runs folder's cap (`--class-cap-mb`), 429 past a
student's rate (RATE_PER_S submissions a second, BURST at once).

The board: `GET /api/class/board` (every run with its student, settings, history, handwriting
accuracy), `GET /api/class/board.csv` and `GET /api/class/report.html` (`digitlab report`'s style:
one HTML file with the overlaid curves, `compare`'s plot). The operator always sees it; students and
view-only links only with `--class-board`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import urllib.parse
from pathlib import Path

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from digitlab import runs
from digitlab.browser import page_runs
from digitlab.serve import access, class_board, openapi, uploads

CLASS_FILE = class_board.CLASS_FILE
RUN_NAME = re.compile(r"class-[a-z0-9-]{1,40}-[0-9a-f]{12}")
# A student's name: letters (any script), digits, spaces and . ' - _, starting with a letter or digit.
STUDENT_NAME = re.compile(r"[^\W_][\w .'-]{0,39}")
SECRET_HEADER = "X-Run-Secret"
RATE_PER_S = 10.0
BURST = 20
DEFAULT_CAP_BYTES = 2 * 1024**3
EPOCH_KEYS = {"epoch", "history", "weights", "handwriting_accuracy"}
FINISH_KEYS = {"status", "weights", "wall_time_s"}


@dataclasses.dataclass(frozen=True)
class ClassSettings:
    """A class's limits: the runs folder's cap, whether students see the board, each student's rate."""

    cap_bytes: int = DEFAULT_CAP_BYTES
    board_for_students: bool = False
    rate_per_s: float = RATE_PER_S
    burst: int = BURST


def _errors(**statuses: str) -> dict:
    """openapi.errors for the statuses named "s404"=..., each with its own description."""
    return openapi.errors(*(int(status[1:]) for status in statuses), **statuses)


COMMON_ERRORS = {
    "s400": "The body is not JSON.",
    "s403": "A view-only link, another site, or (for a run) not its secret.",
    "s404": "No class run of that name, or this server has no class.",
    "s413": "Over 4 MB, or the runs folder is at its cap (--class-cap-mb).",
    "s422": "Not a page run's settings or epoch: `detail` says which field and why.",
    "s429": "This student sends faster than the class allows; wait and send again.",
}


_WEIGHTS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "shape", "base64"],
        "properties": {
            "name": {"type": "string", "description": "dense_0/kernel, dense_0/bias, ... in Keras's order"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "base64": {"type": "string", "description": "float32 little-endian, base64"},
        },
    },
}
_ROW = {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 1}
BODIES = {
    "begin": {
        "type": "object",
        "required": ["format", "version", "run_id", "config", "data_sha256", "student"],
        "additionalProperties": False,
        "properties": {
            "format": {"const": page_runs.FORMAT},
            "version": {"const": page_runs.FORMAT_VERSION},
            "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "config": {"type": "object", "description": "TrainConfig's fields, resolved, with its seed"},
            "data_sha256": {"type": "object", "description": "the MNIST arrays' SHA-256s (this server's)"},
            "engine": {"type": "string"},
            "browser": {"type": "string"},
            "student": {"type": "string", "minLength": 1, "maxLength": 40},
        },
    },
    "epoch": {
        "type": "object",
        "required": ["epoch", "history", "weights"],
        "additionalProperties": False,
        "properties": {
            "epoch": {"type": "integer", "minimum": 1},
            "history": {
                "type": "object",
                "required": list(runs.HISTORY_KEYS),
                "additionalProperties": False,
                "properties": {key: _ROW for key in runs.HISTORY_KEYS},
            },
            "weights": _WEIGHTS,
            "handwriting_accuracy": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        },
    },
    "finish": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {
            "status": {"enum": ["complete", "interrupted"]},
            "weights": {**_WEIGHTS, "description": "the final weights (default: the last epoch's, as kept)"},
            "wall_time_s": {"type": "number", "minimum": 0},
        },
    },
}


def _json_body(kind: str, description: str) -> dict:
    """openapi_extra for a route that reads its JSON body itself (page_runs checks it, with sentences): the
    body's shape; what no schema can say (TrainConfig's rules, the weights' shapes) answers 422."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": BODIES[kind]}},
        }
    }


class Created(BaseModel):
    run: str = Field(description="The run folder's name.")
    secret: str = Field(description=f"Present it as {SECRET_HEADER} with every later submission of this run.")


class Kept(BaseModel):
    run: str
    epochs: int = Field(description="The epochs the run folder holds now.")
    status: str


class _Bucket:
    """A token bucket: `rate` submissions a second, `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Classroom:
    """The class's state in the server: the runs folder's size, the students' rates, a lock per run."""

    def __init__(self, runs_dir, settings: ClassSettings):
        self.runs_dir, self.settings = Path(runs_dir), settings
        self.used_bytes: int | None = None
        self.buckets: dict[str, _Bucket] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.begin_lock = asyncio.Lock()
        # A finish writes the model, its checkpoint and curves.png (Keras, Matplotlib: a few hundred ms of
        # mostly Python, holding the GIL): one at a time, so the epochs arriving meanwhile keep moving.
        self.finishing = asyncio.Semaphore(1)

    def measure(self) -> int:
        if self.used_bytes is None:
            self.used_bytes = _folder_size(self.runs_dir) if self.runs_dir.is_dir() else 0
        return self.used_bytes

    def check_room(self, incoming: int) -> None:
        used, cap = self.measure(), self.settings.cap_bytes
        if used + incoming > cap:
            raise HTTPException(
                413,
                f"The runs folder is full: it holds {used / 1e6:.1f} MB of its {cap / 1e6:.1f} MB cap "
                "(digitlab serve --class-cap-mb), so nothing more is kept. Ask the teacher to make room.",
            )

    def take(self, student: str) -> None:
        bucket = self.buckets.setdefault(student.casefold(), _Bucket(self.settings.rate_per_s, self.settings.burst))
        if not bucket.take():
            raise HTTPException(
                429,
                f"{student} sends more than {self.settings.rate_per_s:g} submissions a second; wait a moment and "
                "send again (the page does so by itself).",
                headers={"Retry-After": "1"},
            )

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())


def _folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def classroom_of(request: Request) -> Classroom:
    found = getattr(request.app.state, "classroom", None)
    if found is None:
        raise HTTPException(404, "This server has no class; start it with digitlab serve --class.")
    return found


def require_submitter(request: Request) -> None:
    """The operator or a student, from this site; a view-only link watches and may not submit."""
    if access.role_of(request) not in (access.OPERATOR, access.STUDENT):
        raise HTTPException(
            403, "This link is view-only: it can watch, not send runs. Open the students' link the teacher gave."
        )
    origin = request.headers.get("origin")
    if origin is not None and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"A request from another site ({origin}) may not send runs here.")


def require_board(request: Request) -> None:
    """The operator, or anyone with a link when the teacher shows the board to the class."""
    role = access.role_of(request)
    if role != access.OPERATOR and not classroom_of(request).settings.board_for_students:
        raise HTTPException(403, "The teacher has not shown the class board (digitlab serve --class-board).")


async def _read_json(request: Request) -> tuple[dict, int]:
    body = await request.body()
    if len(body) > uploads.MAX_RUN_BYTES:
        raise HTTPException(413, f"A submission may be at most {uploads.MAX_RUN_BYTES} bytes; this one is {len(body)}.")
    try:
        document = json.loads(body, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise HTTPException(400, f"The body is not JSON ({error}); the page sends a JSON object.") from None
    if not isinstance(document, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    return document, len(body)


def _listed(keys) -> str:
    return ", ".join(sorted(keys))


def _no_constant(name: str):
    raise HTTPException(422, f"Every number must be finite; the JSON holds {name}.")


def student_name(value) -> str:
    if not isinstance(value, str) or not STUDENT_NAME.fullmatch(value.strip()):
        raise HTTPException(
            422,
            "student must be your name: 1 to 40 letters, digits, spaces or . ' - _, starting with a letter or digit.",
        )
    return value.strip()


def _slug(student: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", student.casefold().encode("ascii", "ignore").decode()).strip("-")
    return (slug or hashlib.sha256(student.encode()).hexdigest()[:8])[:40]


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _open_class_run(classroom: Classroom, name: str, secret: str | None) -> tuple[runs.Run, dict]:
    """The class run `name` after checking its name and the secret its page was given."""
    if not RUN_NAME.fullmatch(name):
        raise HTTPException(404, f"No class run {name!r}: a class run's name is class-STUDENT-ID.")
    run = runs.Run(classroom.runs_dir / name)
    try:
        record = run.read_json(CLASS_FILE)
    except runs.RunError:
        raise HTTPException(404, f"No class run {name!r} here; start one from the page.") from None
    if not secret or not hmac.compare_digest(_secret_hash(secret), str(record.get("secret_sha256", ""))):
        raise HTTPException(
            403, f"This is not your run: {SECRET_HEADER} must be the secret your page was given when the run began."
        )
    return run, record


def _loaded(request: Request):
    return uploads._loaded(request)


def _files_size(run: runs.Run, epoch: int | None) -> int:
    """The size of the run folder's own files and of epoch `epoch`'s record: what a submission may change
    (a walk of epochs/ would cost a stat per epoch kept, on every submission)."""
    size = sum(entry.stat().st_size for entry in os.scandir(run.path) if entry.is_file())
    record = run.file(runs.EPOCHS_FOLDER) / f"epoch-{epoch:04d}.npz" if epoch else None
    return size + (record.stat().st_size if record is not None and record.is_file() else 0)


async def _written(classroom: Classroom, run: runs.Run, write, epoch: int | None = None) -> None:
    """Runs `write` in a thread and adds what it wrote (the run's files, epoch `epoch`'s record) to the
    runs folder's size."""
    before = await run_in_threadpool(_files_size, run, epoch)
    try:
        await run_in_threadpool(write)
    finally:
        after = await run_in_threadpool(_files_size, run, epoch)
        classroom.used_bytes = classroom.measure() + after - before


router = APIRouter(prefix="/api/class", tags=["class"])


@router.get("", responses=_errors(s404=COMMON_ERRORS["s404"]))
async def class_state(request: Request):
    """The class: the caller's role, whether students see the board, the runs folder's use and cap."""
    classroom = classroom_of(request)
    return {
        "class": True,
        "role": access.role_of(request),
        "board_for_students": classroom.settings.board_for_students,
        "cap_bytes": classroom.settings.cap_bytes,
        "used_bytes": await run_in_threadpool(classroom.measure),
    }


@router.post(
    "/runs",
    status_code=201,
    response_model=Created,
    dependencies=[Depends(require_submitter)],
    responses=_errors(**COMMON_ERRORS, s409="This run was kept already, or it was trained on other MNIST arrays."),
    openapi_extra=_json_body("begin", "The page run's head and the student's name."),
)
async def begin_run(request: Request):
    """A student's run begins: its settings (the page run's head) and the student's name; 201 with the run's secret."""
    classroom = classroom_of(request)
    document, size = await _read_json(request)
    student = student_name(document.pop("student", None))
    classroom.take(student)
    try:
        config = page_runs.check_settings(document)
    except page_runs.PageRunError as error:
        raise HTTPException(422, str(error)) from None
    classroom.check_room(size)
    loaded = await run_in_threadpool(_loaded, request)
    name = f"class-{_slug(student)}-{document['run_id'][:12]}"
    secret = secrets.token_urlsafe(24)
    record = {"student": student, "secret_sha256": _secret_hash(secret), "began": time.time(), "handwriting": []}
    async with classroom.begin_lock:
        # The net's weight shapes, built once here (Keras, about a second the first time), not by its epochs.
        await run_in_threadpool(page_runs.expected_weights, config)
        try:
            run = await run_in_threadpool(page_runs.begin, document, config, classroom.runs_dir, loaded, name)
        except (page_runs.AlreadySaved, page_runs.OtherData) as error:
            raise HTTPException(409, str(error)) from None
        await run_in_threadpool(run.write_json, CLASS_FILE, record)
    classroom.used_bytes = classroom.measure() + await run_in_threadpool(_folder_size, run.path)
    return JSONResponse({"run": run.name, "secret": secret}, status_code=201)


@router.post(
    "/runs/{name}/epochs",
    response_model=Kept,
    dependencies=[Depends(require_submitter)],
    responses=_errors(**COMMON_ERRORS, s409="The run is finished, or an epoch is missing before this one."),
    openapi_extra=_json_body("epoch", "One epoch: its number, history row, weights, and own-digits accuracy."),
)
async def add_epoch(request: Request, name: str, x_run_secret: str | None = Header(None)):
    """One epoch of a student's run: {"epoch": N, "history": {four lists of one value}, "weights": [...],
    "handwriting_accuracy": 0-1 or null}."""
    classroom = classroom_of(request)
    run, record = _open_class_run(classroom, name, x_run_secret)
    classroom.take(record["student"])
    document, size = await _read_json(request)
    unknown = sorted(set(document) - EPOCH_KEYS)
    if unknown:
        raise HTTPException(
            422, f"Unknown field(s) {', '.join(unknown)}; an epoch holds {', '.join(sorted(EPOCH_KEYS))}."
        )
    async with classroom.lock(name):
        config = await run_in_threadpool(run.config)
        status = run.status().get("status")
        if status in ("complete", "interrupted") and run.file(runs.MODEL_FILE).is_file():
            raise HTTPException(409, f"The run {name} is finished ({status}); start a new run to train again.")
        done = len(run.history()["val_accuracy"])
        epoch = document.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise HTTPException(422, "epoch must be the number of the epoch just trained, from 1.")
        if epoch <= done:  # A retry of an epoch already kept: nothing is written again.
            return {"run": name, "epochs": done, "status": "running"}
        if epoch != done + 1:
            raise HTTPException(409, f"The run holds {done} epochs; send epoch {done + 1} before epoch {epoch}.")
        history = document.get("history")
        if not isinstance(history, dict):
            raise HTTPException(422, "history must be a JSON object of the four lists, one value each.")
        handwriting = document.get("handwriting_accuracy")
        if handwriting is not None and (
            not isinstance(handwriting, (int, float)) or isinstance(handwriting, bool) or not 0 <= handwriting <= 1
        ):
            raise HTTPException(422, "handwriting_accuracy must be a number from 0 to 1, or null.")
        try:
            if page_runs.check_history(history, config) != 1:
                raise page_runs.PageRunError("history must hold one value per list: this epoch's.")
            if epoch > (config.epochs or 0):
                raise page_runs.PageRunError(f"The run plans {config.epochs} epochs; epoch {epoch} is past them.")
            weights = await run_in_threadpool(page_runs.check_weights, document.get("weights"), config)
        except page_runs.PageRunError as error:
            raise HTTPException(422, str(error)) from None
        classroom.check_room(size // 2)  # Weights are kept at float16: about 3/8 of their base64.

        def write():
            page_runs.add_epochs(run, history, weights)
            record["handwriting"] = [*record.get("handwriting", []), handwriting][:epoch]
            record["updated"] = time.time()
            run.write_json(CLASS_FILE, record)

        await _written(classroom, run, write, epoch)
    return {"run": name, "epochs": epoch, "status": "running"}


@router.post(
    "/runs/{name}/finish",
    response_model=Kept,
    dependencies=[Depends(require_submitter)],
    responses=_errors(**COMMON_ERRORS, s409="The run is finished already, or has no epoch."),
    openapi_extra=_json_body("finish", "How the run ended, its final weights, its time."),
)
async def finish_run(request: Request, name: str, x_run_secret: str | None = Header(None)):
    """A student's run ends: {"status": "complete" | "interrupted", "weights": [...] (the last epoch's when
    left out), "wall_time_s": seconds}."""
    classroom = classroom_of(request)
    run, record = _open_class_run(classroom, name, x_run_secret)
    classroom.take(record["student"])
    document, size = await _read_json(request)
    unknown = sorted(set(document) - FINISH_KEYS)
    if unknown:
        raise HTTPException(
            422, f"Unknown field(s) {', '.join(unknown)}; a finish holds {', '.join(sorted(FINISH_KEYS))}."
        )
    loaded = await run_in_threadpool(_loaded, request)
    async with classroom.lock(name):
        if run.file(runs.MODEL_FILE).is_file():
            raise HTTPException(409, f"The run {name} is finished already; start a new run to train again.")
        config = await run_in_threadpool(run.config)
        done = len(run.history()["val_accuracy"])
        status = document.get("status")
        if status not in ("complete", "interrupted"):
            raise HTTPException(422, 'status must be "complete" or "interrupted".')
        if done < 1:
            raise HTTPException(409, "The run has no epoch yet; there is nothing to keep.")
        if (status == "complete") != (done == config.epochs):
            raise HTTPException(409, f"The run holds {done} of {config.epochs} epochs, so it cannot be {status}.")
        wall = document.get("wall_time_s", 0)
        if not isinstance(wall, (int, float)) or isinstance(wall, bool) or not 0 <= wall < 1e7:
            raise HTTPException(422, "wall_time_s must be the seconds the run took, a number from 0.")
        try:
            if document.get("weights") is None:
                if done not in run.recorded_epochs():
                    raise page_runs.PageRunError("weights: the run has no weights for its last epoch; send them.")
                weights = run.epoch_weights(done)
            else:
                weights = await run_in_threadpool(page_runs.check_weights, document["weights"], config)
        except page_runs.PageRunError as error:
            raise HTTPException(422, str(error)) from None
        classroom.check_room(size + 2 * 4 * sum(weight.size for weight in weights))
        head = {"run_id": name[-12:], "wall_time_s": wall, "engine": "browser (class)", "browser": record["student"]}
        async with classroom.finishing:
            await _written(
                classroom, run, lambda: page_runs.finish(run, config, status, weights, head, loaded, source="class")
            )
        request.app.state.trainer.networks.forget(name)
    return {"run": name, "epochs": done, "status": status}


BoardAccess = Depends(require_board)
BOARD_ERRORS = _errors(s403=COMMON_ERRORS["s403"], s404=COMMON_ERRORS["s404"])


@router.get("/board", dependencies=[BoardAccess], responses=BOARD_ERRORS)
async def board(request: Request):
    """Every student's run as it arrives: student, status, settings, history per epoch, handwriting accuracy."""
    classroom = classroom_of(request)
    return {"runs": await run_in_threadpool(class_board.rows, classroom.runs_dir)}


@router.get(
    "/board.csv",
    dependencies=[BoardAccess],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **BOARD_ERRORS},
)
async def board_as_csv(request: Request):
    """The board's table as CSV, one row a run."""
    rows = await run_in_threadpool(class_board.rows, classroom_of(request).runs_dir)
    return Response(
        class_board.csv_text(rows),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="class-board.csv"'},
    )


@router.get(
    "/report.html",
    dependencies=[BoardAccess],
    response_class=HTMLResponse,
    responses=BOARD_ERRORS,
)
async def board_as_html(request: Request):
    """The board as one HTML file (`digitlab report`'s style): the table and the overlaid val-accuracy curves."""
    runs_dir = classroom_of(request).runs_dir
    rows = await run_in_threadpool(class_board.rows, runs_dir)
    html = await run_in_threadpool(class_board.html, runs_dir, rows)
    return HTMLResponse(html, headers={"Content-Disposition": 'attachment; filename="class-board.html"'})
