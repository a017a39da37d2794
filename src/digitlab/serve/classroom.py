"""A class: every student's page trains its own network and sends its run here, epoch by epoch.

    digitlab serve --host 0.0.0.0 --class                 # prints the operator's, the students' and a view-only link
    app = serving.create_app(runs_dir="runs", class_settings=classroom.ClassSettings(cap_bytes=2 * 10**9))

The server trains nothing: a student's page trains in the browser (browser.js) and sends

- `POST /api/class/runs`: the run's settings (the head of `browser.page_runs`' document) and the
  name the student typed; 201 `{"run": NAME, "secret": SECRET}`. The run folder exists from now on,
  with the status "running".
- `POST /api/class/runs/NAME/epochs` (header `X-Run-Secret: SECRET`): one epoch's history row, if the
  student drew some the accuracy on their own handwriting, and now and then (the page: every
  few seconds) its weights, recorded at float16 as epochs/epoch-NNNN.npz, what the page's slider opens;
  a closed laptop loses at most the epoch in progress. The same epoch sent twice (a retry) is answered
  200 and written once. How an epoch is kept (a journal line, history.json every few seconds):
  `class_runs`.
- `POST /api/class/runs/NAME/finish` (the secret): the status ("complete" or "interrupted") and the
  final weights at float32 (the page always sends them; left out, the last epoch's record, if it has
  one); the folder gets model.keras, checkpoint.npz, curves.png, metrics.json.

These are `page_runs.begin`, its epochs and `page_runs.finish`: the one-shot `POST /api/runs` is the
same three steps at once. Only the page that created a run holds its secret (the folder keeps its
SHA-256 in class.json), so students cannot write into each other's runs, and nothing here deletes.

Every submission is checked before anything is written (`page_runs`' checks: shapes, sizes, finite
numbers, the config's rules; the student's name; the run's name, which must match `class_runs.RUN_NAME`, so no
path leaves the runs folder), and refused with a 4xx sentence: 403 for a view-only link or a wrong
secret, 413 over the size of one run or over the runs folder's cap (`--class-cap-mb`), 429 past a
student's rate (`class_runs.RATE_PER_S` submissions a second, `BURST` at once).

The board: `GET /api/class/board` (every run with its student, settings, history, handwriting
accuracy), `GET /api/class/board.csv` and `GET /api/class/report.html` (`digitlab report`'s style:
one HTML file with the overlaid curves, `compare`'s plot). The operator always sees it; students and
view-only links only with `--class-board`.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from digitlab import runs
from digitlab.browser import page_runs
from digitlab.serve import access, class_board, class_runs, openapi, uploads
from digitlab.serve.class_runs import CLASS_FILE, SECRET_HEADER, Classroom, ClassSettings

__all__ = ["ClassSettings", "Classroom", "SECRET_HEADER", "router"]

KEYS = {
    "an epoch": {"epoch", "history", "weights", "handwriting_accuracy"},
    "a finish": {"status", "weights", "wall_time_s"},
}


def _errors(**statuses: str) -> dict:
    """openapi.errors for the statuses named "s404"=..., each with its own description."""
    return openapi.errors(*(int(status[1:]) for status in statuses), **statuses)


COMMON_ERRORS = {
    "s400": "The body is not JSON.",
    "s403": "A view-only link, another site, or (for a run) not its secret.",
    "s404": "No class run of that name, or this server has no class.",
    "s413": f"Over {uploads.MAX_RUN_BYTES // 1024**2} MB, or the runs folder is at its cap (--class-cap-mb).",
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
        "required": ["epoch", "history"],
        "additionalProperties": False,
        "properties": {
            "epoch": {"type": "integer", "minimum": 1},
            "history": {
                "type": "object",
                "required": list(runs.HISTORY_KEYS),
                "additionalProperties": False,
                "properties": {key: _ROW for key in runs.HISTORY_KEYS},
            },
            "weights": {**_WEIGHTS, "description": "the epoch's weights, now and then (float32, kept at float16)"},
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
    """A class run begun: its name, and the secret that its later submissions present."""

    run: str = Field(description="The run folder's name.")
    secret: str = Field(description=f"Present it as {SECRET_HEADER} with every later submission of this run.")


class Kept(BaseModel):
    """A submission kept: the run, the epochs its folder holds now, its status."""

    run: str
    epochs: int = Field(description="The epochs the run folder holds now.")
    status: str


def classroom_of(request: Request) -> Classroom:
    """The server's class (404 if it has none)."""
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


async def _submission(request: Request, name: str, secret: str | None, what: str):
    """A run's later submission (`what`: "an epoch" or "a finish"), checked up to its content: the class,
    the run and its secret, the student's rate, a JSON object of known fields. The classroom, the run's
    entry, the document and its size in bytes."""
    classroom = classroom_of(request)
    entry = classroom.open(name, secret)
    classroom.take(entry.record["student"])
    document, size = await uploads.read_json(request, "A submission")
    unknown = sorted(set(document) - KEYS[what])
    if unknown:
        raise HTTPException(
            422, f"Unknown field(s) {', '.join(unknown)}; {what} holds {', '.join(sorted(KEYS[what]))}."
        )
    return classroom, entry, document, size


def _page_rule(check, *args):
    """`check(*args)`, a page_runs check, with its PageRunError as a 422."""
    with uploads.page_run_errors():
        return check(*args)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


router = APIRouter(prefix="/api/class", tags=["class"])
SUBMITTERS = [Depends(require_submitter)]


@router.get("", responses=_errors(s404=COMMON_ERRORS["s404"]))
async def class_state(request: Request):
    """The class: the caller's role, whether students see the board, the runs folder's use and cap, and how
    often a page sends its weights with an epoch."""
    classroom = classroom_of(request)
    return {
        "class": True,
        "role": access.role_of(request),
        "board_for_students": classroom.settings.board_for_students,
        "cap_bytes": classroom.settings.cap_bytes,
        "used_bytes": await run_in_threadpool(classroom.measure),
        "weights_every_s": class_runs.WEIGHTS_SECONDS,
    }


@router.post(
    "/runs",
    status_code=201,
    response_model=Created,
    responses=_errors(**COMMON_ERRORS, s409="This run was kept already, or it was trained on other MNIST arrays."),
    openapi_extra=_json_body("begin", "The page run's head and the student's name."),
    dependencies=SUBMITTERS,
)
async def begin_run(request: Request):
    """A student's run begins: its settings (the page run's head) and the student's name; 201 with the run's secret."""
    classroom = classroom_of(request)
    document, size = await uploads.read_json(request, "A submission")
    student = class_runs.student_name(document.pop("student", None))
    classroom.take(student)
    config = _page_rule(page_runs.check_settings, document)
    classroom.check_room(size)
    loaded = await run_in_threadpool(uploads.loaded_data, request)
    name = f"class-{class_runs.slug(student)}-{document['run_id'][:12]}"
    secret = secrets.token_urlsafe(24)
    record = {"student": student, "secret_sha256": class_runs.secret_hash(secret), "began": time.time()}
    async with classroom.begin_lock:
        # The net's weight shapes, built once here (Keras, about a second the first time), not by its epochs.
        await run_in_threadpool(page_runs.expected_weights, config)
        classroom.settle()
    # Not under the lock: a begin waits for its fsyncs (15 ms of a class's hundred at once, one at a time),
    # and the run folder's exclusive mkdir refuses the same run begun twice.
    with uploads.page_run_errors():
        run = await run_in_threadpool(page_runs.begin, document, config, classroom.runs_dir, loaded, name)
    record["handwriting"] = []
    await run_in_threadpool(run.write_json, CLASS_FILE, record)
    history: dict = {key: [] for key in runs.HISTORY_KEYS}
    classroom.entries[run.name] = class_runs.ClassRun(run, config, record, history, 0, False, time.monotonic())
    classroom.used_bytes = classroom.measure() + await run_in_threadpool(class_runs.folder_size, run.path)
    return JSONResponse({"run": run.name, "secret": secret}, status_code=201)


@router.post(
    "/runs/{name}/epochs",
    response_model=Kept,
    responses=_errors(**COMMON_ERRORS, s409="The run is finished, or an epoch is missing before this one."),
    openapi_extra=_json_body(
        "epoch", "One epoch: its number, history row, own-digits accuracy, and now and then weights."
    ),
    dependencies=SUBMITTERS,
)
async def add_epoch(request: Request, name: str, x_run_secret: str | None = Header(None)):
    """One epoch of a student's run: {"epoch": N, "history": {four lists of one value}, "handwriting_accuracy":
    0-1 or null, "weights": [...] (now and then; the page sends them every few seconds)}."""
    classroom, entry, document, size = await _submission(request, name, x_run_secret, "an epoch")
    async with entry.lock:
        if entry.finished:
            raise HTTPException(409, f"The run {name} is finished; start a new run to train again.")
        epoch, done = document.get("epoch"), entry.done
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
        if handwriting is not None and not (_is_number(handwriting) and 0 <= handwriting <= 1):
            raise HTTPException(422, "handwriting_accuracy must be a number from 0 to 1, or null.")
        if _page_rule(page_runs.check_history, history, entry.config) != 1:
            raise HTTPException(422, "history must hold one value per list: this epoch's.")
        if epoch > (entry.config.epochs or 0):
            raise HTTPException(422, f"The run plans {entry.config.epochs} epochs; epoch {epoch} is past them.")
        weights = document.get("weights")
        if weights is not None:  # A few ms, in a thread: the epochs without weights keep being answered.
            weights = await run_in_threadpool(_page_rule, page_runs.check_weights, weights, entry.config)
        # Weights are kept at float16: about 3/8 of their base64.
        classroom.check_room(size // 2 if weights is not None else size)
        await classroom.add_epoch(entry, history, handwriting, weights)
    return {"run": name, "epochs": epoch, "status": "running"}


@router.post(
    "/runs/{name}/finish",
    response_model=Kept,
    responses=_errors(**COMMON_ERRORS, s409="The run is finished already, or has no epoch."),
    openapi_extra=_json_body("finish", "How the run ended, its final weights, its time."),
    dependencies=SUBMITTERS,
)
async def finish_run(request: Request, name: str, x_run_secret: str | None = Header(None)):
    """A student's run ends: {"status": "complete" | "interrupted", "weights": [...] (the last epoch's record
    when left out), "wall_time_s": seconds}."""
    classroom, entry, document, size = await _submission(request, name, x_run_secret, "a finish")
    loaded = await run_in_threadpool(uploads.loaded_data, request)
    async with entry.lock:
        run, config, done = entry.run, entry.config, entry.done
        if entry.finished:
            raise HTTPException(409, f"The run {name} is finished already; start a new run to train again.")
        status = document.get("status")
        if status not in ("complete", "interrupted"):
            raise HTTPException(422, 'status must be "complete" or "interrupted".')
        if done < 1:
            raise HTTPException(409, "The run has no epoch yet; there is nothing to keep.")
        if (status == "complete") != (done == config.epochs):
            raise HTTPException(409, f"The run holds {done} of {config.epochs} epochs, so it cannot be {status}.")
        wall = document.get("wall_time_s", 0)
        if not _is_number(wall) or not 0 <= wall < 1e7:
            raise HTTPException(422, "wall_time_s must be the seconds the run took, a number from 0.")
        if document.get("weights") is not None:
            weights = _page_rule(page_runs.check_weights, document["weights"], config)
        elif done in run.recorded_epochs():
            weights = run.epoch_weights(done)
        else:
            raise HTTPException(422, "weights: the run has no weights for its last epoch; send them.")
        classroom.check_room(size + 2 * 4 * sum(weight.size for weight in weights))
        student = entry.record["student"]
        head = {"run_id": name[-12:], "wall_time_s": wall, "engine": "browser (class)", "browser": student}
        await classroom.finish(entry, status, weights, head, loaded)
        request.app.state.runs_home.networks.forget(name)
    return {"run": name, "epochs": done, "status": status}


BoardAccess = Depends(require_board)
BOARD_ERRORS = _errors(s403=COMMON_ERRORS["s403"], s404=COMMON_ERRORS["s404"])


@router.get("/board", dependencies=[BoardAccess], responses=BOARD_ERRORS)
async def board(request: Request):
    """Every student's run as it arrives: student, status, settings, history per epoch, handwriting accuracy."""
    classroom = classroom_of(request)
    await run_in_threadpool(classroom.measure)  # Once: the epochs a stopped server's journals hold, written in.
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
