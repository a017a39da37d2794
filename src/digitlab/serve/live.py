"""Training from the page: one run at a time, in a thread of the server, its epochs streamed as Server-Sent Events.

    trainer = Trainer("runs", data_path=None, limits=Limits(max_epochs=500))
    app.state.trainer = trainer; app.include_router(router)

Endpoints (the operator's token for the POSTs when the server has tokens; see `access`):

- `POST /api/train` with a JSON object of TrainConfig fields (those in PAGE_FIELDS) -> 202
  `{"run": NAME}`. Each field's type is checked first (a string is not a number), then its value
  by TrainConfig's own rules, so a bad value gets the sentence the `train` flag prints, in a 422
  `{"detail": ..., "field": NAME}`; then the server's limits (epochs, training images). 409 while
  another run trains here. /openapi.json gives the body's schema with this server's limits
  (`train_body_schema`).
- `GET /api/train`: what trains now (run, epoch, who started it) and the page's choices.
- `GET /api/train/NAME/events`: `text/event-stream`, one `epoch` event per epoch (`id:` the epoch;
  data: epoch, loss, accuracy, val_loss, val_accuracy, wall_time_s, the time it ended, its
  tiles' URL), each newest epoch of a live run followed by a `tiles` event (no id; data: the
  epoch and its tiles as a PNG data URL), then one `end` event (`id: end`) with the run's
  final status. A viewer that
  reconnects with `Last-Event-ID: E` gets the epochs after E; a finished run replays from its
  folder. At most `Limits.max_viewers` at once (503 beyond).
- `POST /api/train/NAME/stop`: the run stops after the epoch in progress, saved as Ctrl-C saves
  it ("interrupted", `digitlab train --resume` finishes it); `POST /api/train/NAME/resume` does
  (409, naming it, while another process writes the run: `runlock`).
- `GET /api/runs`, `GET /api/runs/NAME` (config, history, recorded epochs),
  `GET /api/runs/NAME/epochs/E/tiles.png`, `GET /api/runs/NAME/evaluation?epoch=E`. The list
  shows every run folder, each with `problem`: why it can't be opened (a damaged config.json, a
  name that is not UTF-8), or null; a damaged run answers 409 with that sentence, never a 500.

A run started here is an ordinary run folder (`digitlab runs` lists it) made by
`training.train` with `record_epochs` on, so every epoch's weights are kept (`networks`).
Training runs in a thread because the fast engine's C epochs release the GIL: measured with
scripts/live_bench.py, the page's runs take the time `digitlab train` takes, and the server
keeps answering meanwhile. A stop sets an event that the epoch-end hook turns into the
KeyboardInterrupt training already handles (`interrupts` only acts in the main thread).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import math
import re
import secrets
import threading
import time
import traceback
import urllib.parse
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from digitlab import config as config_module
from digitlab import data, errors, runlock, runs, training
from digitlab.browser import rules
from digitlab.config import ConfigError, TrainConfig
from digitlab.serve import access, openapi
from digitlab.serve.networks import Networks

# The TrainConfig fields the page offers (the browser's, and where the server trains, the validation
# split); the rest keep their defaults (record_epochs is always on).
PAGE_FIELDS = (*rules.PAGE_FIELDS, "validation")
# The nets the fast engine trains in a few seconds an epoch (the deep net's BatchNormalization runs on fit).
LIVE_MODELS = ("shallow", "intermediate", "deep")
KEEPALIVE_S = 15.0
RETRY_MS = 2000
KEPT_JOBS = 16
# A Last-Event-ID: an epoch number (ASCII digits only: '³'.isdigit() is true, int('³') fails) or "end".
EVENT_ID = re.compile(r"[0-9]{1,9}|end")
# TrainConfig.validate's bounds on the page's numeric fields, as JSON Schema for /openapi.json;
# test_live.py holds each against TrainConfig (the largest allowed value passes, one more fails).
FIELD_BOUNDS: dict[str, dict] = {
    "learning_rate": {"exclusiveMinimum": 0, "maximum": 10},
    "batch_size": {"minimum": 1, "maximum": 60_000},
    "epochs": {"minimum": 1, "maximum": 100_000},
    "seed": {"minimum": 0, "maximum": 2**31 - 1},
    "train_limit": {"minimum": 1},
}
# One Server-Sent Event of GET /api/train/NAME/events (as the OpenAPI 3.2 itemSchema of an event stream).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": ["epoch", "tiles", "end"]},
        "data": {"type": "string", "contentMediaType": "application/json", "description": "A JSON object."},
        "id": {"type": "string", "description": "The epoch, or `end`; none for `tiles`."},
        "retry": {"type": "integer"},
    },
}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, so that one server stays healthy for a class."""

    max_epochs: int = 1000
    max_train_images: int = 60_000
    max_viewers: int = 100

    def check(self, config: TrainConfig) -> None:
        """Raises ConfigError (naming the field) for a run over the server's limits."""
        if config.model not in LIVE_MODELS:
            raise ConfigError(
                f"The page trains the dense nets ({', '.join(LIVE_MODELS)}); train {config.model} with "
                f"`digitlab train --model {config.model}`.",
                field="model",
            )
        assert config.epochs is not None, "Limits.check takes a resolved config"
        if config.epochs > self.max_epochs:
            raise ConfigError(
                f"This server trains at most {self.max_epochs} epochs a run (--max-epochs); got {config.epochs}.",
                field="epochs",
            )
        images = config.train_limit
        if (images is None and self.max_train_images < 60_000) or (images or 0) > self.max_train_images:
            got = "all of them" if images is None else images
            raise ConfigError(
                f"This server trains on at most {self.max_train_images} images a run (--max-train-images); "
                f"set train_limit to {self.max_train_images} or fewer (got {got}).",
                field="train_limit",
            )


def _choices(name: str) -> tuple | None:
    field = next(field for field in dataclasses.fields(TrainConfig) if field.name == name)
    return LIVE_MODELS if name == "model" else field.metadata.get("choices")


def _nullable(name: str) -> bool:
    """Whether a field may be null (its default is None: "the model's default")."""
    return next(field for field in dataclasses.fields(TrainConfig) if field.name == name).default is None


def as_json_number(name: str, value):
    """A page field's JSON number as TrainConfig takes it: whole numbers become floats for float fields,
    as the `train` flags parse them, and whole floats (3.0) ints for int fields, as JSON has one kind of
    number. Anything else is returned as it is, for TrainConfig's rules to judge."""
    kind, _ = config_module.field_type(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if kind is float:
        return float(value)
    if kind is int and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def type_error(name: str, value) -> ConfigError | None:
    """The sentence for a page field's value of the wrong type (a list or an object where a word is
    wanted: TrainConfig's rules raise TypeError on those), or None when its type is right."""
    kind, _ = config_module.field_type(name)
    if value is None and _nullable(name):
        return None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (kind in (int, float) and number) or (kind in (str, bool) and isinstance(value, kind)):
        return None
    wanted = {str: "a word", int: "a whole number", float: "a number", bool: "true or false"}[kind]
    choices = _choices(name)
    if choices:
        wanted += f" (one of {', '.join(choices)})"
    if _nullable(name):
        wanted += ", or null for the model's default"
    return ConfigError(f"{name} must be {wanted}; got {json.dumps(value)[:80]}.", field=name)


def config_from_values(values) -> TrainConfig:
    """The resolved TrainConfig a `POST /api/train` body asks for, checked by TrainConfig's own rules,
    so that a bad value gets the very sentence the flag gets; a value those rules cannot even compare
    (a list or an object for a word) gets `type_error`'s sentence."""
    if not isinstance(values, dict):
        raise ConfigError(
            'The body must be a JSON object of TrainConfig fields, e.g. {"learning_rate": 0.5, "epochs": 3}.'
        )
    for name in values:
        if name not in PAGE_FIELDS:
            raise ConfigError(
                f"The page cannot set {name!r}; it sets {', '.join(PAGE_FIELDS)}. Train other settings with "
                "`digitlab train`.",
                field=name if isinstance(name, str) else None,
            )
    given = {name: as_json_number(name, value) for name, value in values.items()}
    try:
        return TrainConfig(**given, record_epochs=True, seeds=1, engine="auto").resolved()
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        for name, value in given.items():
            wrong = type_error(name, value)
            if wrong is not None:
                raise wrong from None
        raise ConfigError(f"The body's values do not make a training configuration ({error}).") from None


def train_body_schema(limits: Limits) -> dict:
    """The JSON Schema of a `POST /api/train` body on a server with these limits: every page field's
    type, choices and bounds, so that a body it allows trains (or waits its turn: 409)."""
    properties, required = {}, []
    for name in PAGE_FIELDS:
        kind, _ = config_module.field_type(name)
        field = next(field for field in dataclasses.fields(TrainConfig) if field.name == name)
        schema: dict = {"type": _JSON_TYPES[kind], "description": field.metadata["help"]}
        if _choices(name):
            schema["enum"] = list(_choices(name) or ())
        schema.update(FIELD_BOUNDS.get(name, {}))
        if name == "epochs":
            schema["maximum"] = min(schema["maximum"], limits.max_epochs)
        if name == "train_limit":
            schema["maximum"] = limits.max_train_images
        # null is the model's default: allowed where every net's default is within this server's limits.
        nullable = _nullable(name) and not (
            (name == "train_limit" and limits.max_train_images < 60_000)
            or (
                name == "epochs"
                and any(config_module.MODEL_DEFAULTS[net]["epochs"] > limits.max_epochs for net in LIVE_MODELS)
            )
        )
        if nullable:
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"].append(None)
        elif _nullable(name):  # Left out, it would be the model's default, over this server's limits.
            required.append(name)
        properties[name] = schema
    example = {
        "model": "shallow",
        "learning_rate": 0.5,
        "epochs": min(3, limits.max_epochs),
        "train_limit": min(2000, limits.max_train_images),
    }
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "example": example,
    }


def _frame(event: str, event_id: str, payload: dict) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(finite(payload))}\n\n".encode()


def finite(value):
    """`value` with every float that is not a number (a diverged run's loss) as None: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def tiles_url(run_name: str, epoch: int) -> str:
    return f"/api/runs/{urllib.parse.quote(run_name, safe='')}/epochs/{epoch}/tiles.png"


def epoch_payload(run_name: str, epochs: int | None, history: dict, epoch: int, tiles: bool, **extra) -> dict:
    """The data of epoch `epoch`'s event (1-based), from a run's history; `tiles`: whether it has tiles."""
    payload = {"run": run_name, "epoch": epoch, "epochs": epochs}
    payload.update({key: history[key][epoch - 1] for key in runs.HISTORY_KEYS})
    payload["tiles"] = tiles_url(run_name, epoch) if tiles else None
    payload.update(extra)
    return payload


def end_payload(run: runs.Run, message: str | None = None) -> dict:
    """The data of a run's `end` event: its status, the epoch reached and what to do next."""
    status = run.status()
    payload = {"run": run.name, "status": status.get("status", "unknown"), "epoch": status.get("epoch", 0)}
    try:
        payload["epochs"] = run.config().epochs
    except runs.RunError:
        payload["epochs"] = None
    if payload["status"] == "interrupted":
        payload["resume"] = runs.resume_command(run.path)
    if message or status.get("message"):
        payload["message"] = message or status.get("message")
    if payload["status"] == "complete":
        try:
            metrics = run.metrics()
            payload.update(wall_time_s=metrics.get("wall_time_s"), final_val_accuracy=metrics.get("final_val_accuracy"))
        except runs.RunError:
            pass
    return payload


class Job:
    """One training in this server: its run, its events so far, and the request to stop it."""

    def __init__(self, name: str, config: TrainConfig, resumed: bool, started_by: str):
        self.name, self.config, self.resumed, self.started_by = name, config, resumed, started_by
        self.started = time.time()
        self.frames: list[bytes] = []  # Frame i is epoch i + 1's event (its tiles as a URL).
        # The newest epoch's tiles as a `tiles` event (a PNG data URL), sent to the viewers that are
        # up to date after its epoch event: one frame to all of them, not one picture request from each.
        self.tiles: bytes | None = None
        self.end: bytes | None = None  # The end event, once the run has ended.
        self.epoch = 0
        self.ended = False
        self.status = "starting"
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self._changed = asyncio.Event()

    def publish(self, frames: list[bytes], tiles: bytes | None, epoch: int) -> None:
        """Adds epoch events and wakes the viewers; runs on the event loop (the thread calls it through it)."""
        self.frames.extend(frames)
        self.tiles = tiles
        self.epoch, self.status = epoch, "running"
        self.wake()

    def finish(self, end: bytes, status: str) -> None:
        """Adds the end event; on the event loop."""
        self.end, self.status, self.ended = end, status, True
        self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> bool:
        """Waits for new events; False after `timeout` seconds without any."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def describe(self) -> dict:
        started = datetime.datetime.fromtimestamp(self.started).strftime("%H:%M:%S")
        return {
            "run": self.name,
            "model": self.config.model,
            "epoch": self.epoch,
            "epochs": self.config.epochs,
            "status": self.status,
            "stopping": self.stop.is_set(),
            "resumed": self.resumed,
            "started": started,
            "started_by": self.started_by,
            "config": {name: getattr(self.config, name) for name in PAGE_FIELDS},
        }


class Trainer:
    """Starts, stops and resumes this server's one training at a time, and keeps its events."""

    def __init__(self, runs_dir, data_path=None, limits: Limits | None = None, log=print):
        self.runs_dir, self.data_path = FilePath(runs_dir), data_path
        self.limits = limits or Limits()
        self.log = log
        self.networks = Networks(self.runs_dir, self.loaded)
        self.jobs: dict[str, Job] = {}
        self.current: Job | None = None
        self.viewers = 0
        self.closing = False
        self._loaded: data.Loaded | None = None
        self._loading = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loaded(self) -> data.Loaded:
        """MNIST, loaded once (the first training, or the first evaluation)."""
        with self._loading:
            if self._loaded is None:
                self._loaded = data.load(self.data_path)
            return self._loaded

    def busy_message(self) -> str:
        job = self.current
        assert job is not None
        return (
            f"{job.name} is training (epoch {job.epoch} of {job.config.epochs}), started at "
            f"{job.describe()['started']} by {job.started_by}. One run trains at a time here: wait for it, or stop it."
        )

    async def start(
        self, config: TrainConfig, started_by: str, resume: runs.Run | None = None, lock: runlock.RunLock | None = None
    ) -> Job:
        """Starts a thread that trains `config` into a new run (or resumes `resume`, whose held `lock`
        the thread then owns, and lets go at its end); the Job."""
        if self.current is not None:
            raise HTTPException(409, self.busy_message())
        try:
            loaded = await run_in_threadpool(self.loaded)
            if resume is not None:
                record = resume.read_json(runs.DATA_FILE) if resume.file(runs.DATA_FILE).is_file() else {}
                data.load_recorded(record, loaded=loaded)  # The run's own data, or a sentence why not.
        except data.DataError as error:
            raise HTTPException(409 if resume is not None else 503, str(error)) from None
        if self.current is not None:  # Another request started one while the data loaded.
            raise HTTPException(409, self.busy_message())
        if resume is None:
            if config.seed is None:
                config.seed = secrets.randbelow(2**31 - config.seeds)  # As training.train chooses one.
            name = next((name for name in runs.run_names(config) if not (self.runs_dir / name).exists()), None)
            if name is None:
                raise HTTPException(409, f"Could not find a free run folder name under {self.runs_dir}; wait a second.")
        else:
            name = resume.name
        job = Job(name, config, resumed=resume is not None, started_by=started_by)
        self.current = self.jobs[name] = job
        self.networks.forget(name)
        while len(self.jobs) > KEPT_JOBS:
            self.jobs.pop(next(iter(self.jobs)))
        self._loop = asyncio.get_running_loop()
        job.thread = threading.Thread(target=self._train, args=(job, loaded, lock), name=f"train {name}", daemon=True)
        job.thread.start()
        self.log(f"digitlab: {'resuming' if job.resumed else 'training'} {name} (started by {started_by})")
        return job

    def _train(self, job: Job, loaded: data.Loaded, lock: runlock.RunLock | None = None) -> None:
        """The training thread: trains, publishing each epoch, then the end."""
        loop = self._loop
        assert loop is not None
        published = 0

        def on_epoch_end(epochs_done: int, histories: list[dict], wall_time_s: float) -> None:
            nonlocal published
            ended_at = time.time()
            frames = [
                _frame(
                    "epoch",
                    str(epoch),
                    epoch_payload(
                        job.name,
                        job.config.epochs,
                        histories[0],
                        epoch,
                        tiles=job.config.record_epochs,
                        wall_time_s=round(wall_time_s, 3) if epoch == epochs_done else None,
                        time=ended_at if epoch == epochs_done else None,
                    ),
                )
                for epoch in range(published + 1, epochs_done + 1)  # A resumed run first replays its history.
            ]
            published = epochs_done
            tiles = None
            if job.config.record_epochs:
                try:
                    png = self.networks.tiles_png(job.name, epochs_done)  # 2 ms, then kept for the slider.
                    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
                    tiles = f"event: tiles\ndata: {json.dumps({'epoch': epochs_done, 'png': data_url})}\n\n".encode()
                except runs.RunError:
                    pass
            loop.call_soon_threadsafe(job.publish, frames, tiles, epochs_done)
            if job.stop.is_set():
                raise KeyboardInterrupt  # training saves the run as interrupted, as on Ctrl-C.

        message = None
        try:
            if job.resumed:
                training.resume(
                    self.runs_dir / job.name,
                    loaded=loaded,
                    print_fn=_quiet,
                    verbose=0,
                    on_epoch_end=on_epoch_end,
                    lock=lock,
                )
            else:
                training.train(
                    job.config,
                    runs_dir=self.runs_dir,
                    run_name=job.name,
                    loaded=loaded,
                    print_fn=_quiet,
                    verbose=0,
                    on_epoch_end=on_epoch_end,
                )
        except training.TrainingInterrupted:
            pass
        except errors.DigitlabError as error:
            message = str(error)
        except Exception as error:  # A bug: its traceback goes to the server's log, its sentence to the page.
            self.log(traceback.format_exc())
            message = f"{type(error).__name__}: {error}"
        finally:
            if lock is not None:
                lock.release()
        run = runs.Run(self.runs_dir / job.name)
        end = end_payload(run, message) if run.file(runs.CONFIG_FILE).is_file() else {"status": "failed"}
        if message and end.get("status") not in ("failed", "interrupted"):
            end["status"] = "failed"
        end["run"] = job.name
        if message:
            end["message"] = message
        self.log(
            f"digitlab: {job.name} {end['status']} after epoch {end.get('epoch', 0)}"
            + (f": {message}" if message else "")
        )
        loop.call_soon_threadsafe(self._finished, job, _frame("end", "end", end), end["status"])

    def _finished(self, job: Job, frame: bytes, status: str) -> None:
        self.networks.forget(job.name)  # Its last epoch is now its model.keras.
        job.finish(frame, status)
        if self.current is job:
            self.current = None

    def stop(self, name: str) -> Job:
        job = self.current
        if job is None or job.name != name:
            run = self.networks.open(name)
            raise HTTPException(409, f"{name} is not training here (its status is {run.status().get('status')}).")
        job.stop.set()
        return job

    async def close(self) -> None:
        """At shutdown: stops the training (saved, resumable) and ends every event stream."""
        self.closing = True
        job = self.current
        if job is not None and job.thread is not None:
            job.stop.set()
            await asyncio.to_thread(job.thread.join, 120)
        for each in self.jobs.values():
            each.wake()

    def saved_events(self, run: runs.Run) -> tuple[list[bytes], bytes]:
        """The events of a run not training here: its epochs from history.json, and its end."""
        try:
            history = run.history()
        except runs.RunError:
            history = {key: [] for key in runs.HISTORY_KEYS}
        with_tiles = set(run.recorded_epochs())
        final = self.networks.final_epoch(run)
        if final is not None:
            with_tiles.add(final)
        epochs = run.config().epochs
        frames = [
            _frame("epoch", str(epoch), epoch_payload(run.name, epochs, history, epoch, tiles=epoch in with_tiles))
            for epoch in range(1, len(history["val_accuracy"]) + 1)
        ]
        return frames, _frame("end", "end", end_payload(run))


def _quiet(*args, **kwargs) -> None:
    """Training's own progress lines stay out of the server's log."""


def trainer_of(request: Request) -> Trainer:
    return request.app.state.trainer


def _client(request: Request) -> str:
    host = request.client.host if request.client else "?"
    return f"the {access.role_of(request)} at {host}"


router = APIRouter()
Operator = Depends(access.require_operator)


@router.get("/api/train")
async def training_now(request: Request):
    """What trains on this server now (or null), the page's fields and choices, and the limits."""
    trainer = trainer_of(request)
    fields = {}
    for field in dataclasses.fields(TrainConfig):
        if field.name in PAGE_FIELDS:
            kind, _ = config_module.field_type(field.name)
            choices = field.metadata.get("choices")
            if field.name == "model":
                choices = LIVE_MODELS
            fields[field.name] = {
                "help": field.metadata["help"],
                "type": kind.__name__,
                "choices": list(choices) if choices else None,
                "default": field.default,
            }
    return {
        "training": trainer.current.describe() if trainer.current else None,
        "role": access.role_of(request),
        "fields": fields,
        "model_defaults": {
            name: {key: value for key, value in defaults.items() if key in PAGE_FIELDS}
            for name, defaults in config_module.MODEL_DEFAULTS.items()
            if name in LIVE_MODELS
        },
        "limits": dataclasses.asdict(trainer.limits),
    }


OPERATOR_ONLY = "A view-only token, or a request from another site."


class Started(BaseModel):
    """What `POST /api/train` and `POST /api/train/NAME/resume` answer."""

    run: str = Field(description="The run's folder name.")
    events: str = Field(description="The URL of its events.")


class Stopping(BaseModel):
    """What `POST /api/train/NAME/stop` answers."""

    run: str
    status: str
    detail: str


@router.post(
    "/api/train",
    status_code=202,
    dependencies=[Operator],
    response_model=Started,
    responses=openapi.errors(
        400,
        403,
        409,
        422,
        503,
        s400="The body is not JSON.",
        s403=OPERATOR_ONLY,
        s409="Another run trains here now.",
        s422="A field is not allowed: `detail` says why (as the train flag would), `field` names it.",
        s503="The server cannot find MNIST.",
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            # The body's schema with this server's limits: `train_body_schema`, put in by app.create_app.
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def start_training(request: Request):
    """Starts training a TrainConfig (a JSON object of the fields the page offers) in a new run folder."""
    trainer = trainer_of(request)
    body = await request.body()
    try:
        values = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise HTTPException(400, f'The body is not valid JSON ({error}). Send e.g. {{"epochs": 3}}.') from None
    except ConfigError as error:
        return JSONResponse({"detail": str(error), "field": None}, status_code=422)
    try:
        config = config_from_values(values)
        trainer.limits.check(config)
    except ConfigError as error:
        return JSONResponse({"detail": str(error), "field": error.field}, status_code=422)
    job = await trainer.start(config, _client(request))
    return JSONResponse(_started(job), status_code=202)


def _started(job: Job) -> dict:
    return {"run": job.name, "events": f"/api/train/{urllib.parse.quote(job.name, safe='')}/events"}


def _reject_constant(name: str):
    raise ConfigError(f"Every value must be a finite number or a word; the JSON holds {name}.")


@router.get(
    "/api/train/{name}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
            "description": "`epoch` events, then one `end` event.",
        },
        204: {"description": "Last-Event-ID was `end`: nothing more will come."},
        **openapi.errors(
            400,
            404,
            409,
            422,
            503,
            s400="A Last-Event-ID header that is not an epoch number or `end`.",
            s409="The run's files are damaged (see `detail`).",
            s503="The server has as many viewers as it allows.",
        ),
    },
)
async def events(
    request: Request,
    name: str,
    last_event_id: Annotated[
        str | None,
        Query(pattern=f"^(?:{EVENT_ID.pattern})$", description="As the Last-Event-ID header: the epochs after it."),
    ] = None,
):
    """The run's epochs as Server-Sent Events, live while it trains here (`Last-Event-ID` resumes)."""
    trainer = trainer_of(request)
    job = trainer.jobs.get(name)
    if job is None:
        frames, end = await run_in_threadpool(trainer.saved_events, trainer.networks.open(name))
    seen_text = request.headers.get("last-event-id", last_event_id or "").strip()
    if seen_text == "end":
        if job is None or job.ended:
            return Response(status_code=204)
        seen_text = ""
    if seen_text and not EVENT_ID.fullmatch(seen_text):
        raise HTTPException(400, f"Last-Event-ID must be an epoch number or 'end'; got {seen_text[:40]!r}.")
    seen = int(seen_text or 0)
    if trainer.viewers >= trainer.limits.max_viewers:
        raise HTTPException(
            503, f"This server has {trainer.viewers} viewers, as many as it allows (--max-viewers); try again later."
        )

    async def stream():
        trainer.viewers += 1  # Counted here, so that the finally below always uncounts it.
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            cursor = seen
            while True:
                shown = job.frames if job is not None else frames
                while cursor < len(shown):
                    yield shown[cursor]
                    cursor += 1
                    if job is not None and job.tiles is not None and cursor == len(shown) and not job.ended:
                        await asyncio.sleep(0)  # Every viewer's epoch event goes out before the pictures.
                        if cursor == len(job.frames):  # Still the newest epoch.
                            yield job.tiles
                ended = job.end if job is not None else end
                if ended is not None:
                    yield ended
                    return
                if trainer.closing:
                    return
                assert job is not None
                if not await job.changed(KEEPALIVE_S):
                    yield b": still training\n\n"
        finally:
            trainer.viewers -= 1

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.post(
    "/api/train/{name}/stop",
    status_code=202,
    dependencies=[Operator],
    response_model=Stopping,
    responses=openapi.errors(403, 404, 409, s403=OPERATOR_ONLY, s409="The run is not training here."),
)
async def stop_training(request: Request, name: str):
    """Stops the run after the epoch in progress; it is saved as interrupted, resumable."""
    job = trainer_of(request).stop(name)
    answer = {
        "run": job.name,
        "status": "stopping",
        "detail": "The run stops after the epoch in progress and is saved; resume it here, or with "
        f"`{runs.resume_command(FilePath(trainer_of(request).runs_dir) / job.name)}`.",
    }
    return JSONResponse(answer, status_code=202)


@router.post(
    "/api/train/{name}/resume",
    status_code=202,
    dependencies=[Operator],
    response_model=Started,
    responses=openapi.errors(
        403,
        404,
        409,
        422,
        503,
        s403=OPERATOR_ONLY,
        s409="The run is complete, training, damaged, or has no checkpoint; or another run trains here.",
        s422="The run asks more than this server's limits allow.",
        s503="The server cannot find MNIST.",
    ),
)
async def resume_training(request: Request, name: str):
    """Resumes an interrupted run from its last checkpoint, here (as `digitlab train --resume` would)."""
    trainer = trainer_of(request)
    run = trainer.networks.open(name)
    status = run.status().get("status")
    if trainer.current is not None and trainer.current.name == name:
        raise HTTPException(409, f"{name} is training now.")
    if status == "complete":
        raise HTTPException(409, f"{name} is already complete; there is nothing to resume.")
    if not run.file(runs.CHECKPOINT_FILE).is_file():
        raise HTTPException(409, f"{name} has no checkpoint to resume from; train it again.")
    config = run.config()
    try:
        trainer.limits.check(config)
    except ConfigError as error:
        return JSONResponse({"detail": str(error), "field": error.field}, status_code=422)
    try:  # One writer per run: another process's (a `train --resume`, a sweep) is named in the 409.
        lock = runlock.RunLock(run.path).acquire(f"resuming it from the page, for {_client(request)}")
    except runlock.RunBusy as busy:
        raise HTTPException(409, str(busy)) from None
    try:
        job = await trainer.start(config, _client(request), resume=run, lock=lock)
    except BaseException:
        lock.release()
        raise
    return JSONResponse(_started(job), status_code=202)


@router.get("/api/runs", responses=openapi.errors(409, s409="The runs folder cannot be read."))
async def list_runs(request: Request):
    """The saved runs (as `digitlab runs` lists them), with how many epochs each recorded and, for one
    that cannot be opened, `problem`: why."""
    trainer = trainer_of(request)

    def rows():
        found = trainer.networks.listing()
        for row in found:
            row["training"] = trainer.current is not None and trainer.current.name == row["run"]
        return found

    return finite({"runs_dir": str(trainer.runs_dir), "runs": await run_in_threadpool(rows)})


@router.get("/api/runs/{name}", responses=openapi.errors(404, 409, s409="The run's files are damaged."))
async def run_detail(request: Request, name: str):
    """One run: its status, config, history (first seed) and the epochs whose network can be asked."""
    trainer = trainer_of(request)
    run = trainer.networks.open(name)
    try:
        history = run.history()
    except runs.RunError:
        history = {key: [] for key in runs.HISTORY_KEYS}
    recorded = run.recorded_epochs()
    return finite(
        {
            "run": run.name,
            "status": run.status(),
            "config": run.config().to_dict(),
            "history": history,
            "recorded_epochs": [recorded[0], recorded[-1]] if recorded else None,
            "final_epoch": trainer.networks.final_epoch(run),
            "training": trainer.current is not None and trainer.current.name == name,
        }
    )


@router.get(
    "/api/runs/{name}/epochs/{epoch}/tiles.png",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The first layer's weights, one tile a unit.",
        },
        **openapi.errors(404, 409, 422, s409="The run has no network yet, or its files are damaged."),
    },
)
async def tiles(request: Request, name: str, epoch: Annotated[int, Path(ge=1)]):
    """The first Dense layer's weights after `epoch` as 28x28 tiles, one colour scale (as hidden_units.png)."""
    networks = trainer_of(request).networks
    # Every viewer asks for each epoch's tiles as it arrives: after the first, they come from memory.
    png = networks.cached_tiles(name, epoch) or await run_in_threadpool(networks.tiles_png, name, epoch)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/api/runs/{name}/evaluation",
    responses=openapi.errors(
        404,
        409,
        422,
        503,
        s409="The run has no network yet, it diverged, or its files are damaged.",
        s503="The server cannot find MNIST.",
    ),
)
async def run_evaluation(request: Request, name: str, epoch: Annotated[int | None, Query(ge=1)] = None):
    """Accuracy, confusion matrix and the most confidently wrong digits after `epoch` (default: the last)."""
    networks = trainer_of(request).networks
    return finite(await run_in_threadpool(networks.evaluation, name, epoch))
