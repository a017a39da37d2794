"""The saved runs of `digitlab serve`, and the runs that `digitlab train` is training into its folder, live.

    home = RunsHome("runs", data_path=None, max_viewers=100)
    app.state.runs_home = home; app.include_router(router)

The server trains nothing itself: the page trains in the browser (static/browser.js), and a run it
keeps becomes a run folder here (`uploads`). What the page cannot do alone is served here:

- `GET /api/runs`: every run folder (as `digitlab runs` lists it), each with `training` (a
  process writes it now) and `problem`: why it can't be opened (a damaged config.json, a name
  that is not UTF-8), or null; a damaged run answers 409 with that sentence, never a 500.
- `GET /api/runs/NAME` (config, history, recorded epochs), `GET /api/runs/NAME/epochs/E/tiles.png`,
  `GET /api/runs/NAME/evaluation?epoch=E` (confusion matrix and confident mistakes).
- `GET /api/runs/NAME/events`: `text/event-stream`, one `epoch` event per epoch (`id:` the epoch;
  data: epoch, loss, accuracy, val_loss, val_accuracy, its tiles' URL), then one `end` event
  (`id: end`) with the run's final status. A finished run replays from its folder. A run that
  another process trains now (`digitlab train`, a sweep, `train --resume`: its run lock, `runlock`,
  is held: `runs.Run.being_written`) is followed as it grows: its folder is read every
  POLL_S seconds by one `Follower` shared by all its viewers, and each new epoch goes out as it is
  written, followed by a `tiles` event (no id; data: the epoch and its tiles as a PNG data URL) when
  the run records its epochs (`--record-epochs`). A viewer that reconnects with `Last-Event-ID: E`
  gets the epochs after E. At most `max_viewers` streams at once (503 beyond).

Training writes history.json and status.json after every epoch (a thread beside the next epoch,
at most every 0.1 s: `epoch_files`), and the epoch's weights (`training._EpochEnd`); a follower
publishes an epoch of a recording run once its weights are on disk too, so that its tiles can be
drawn when its event arrives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import threading
import urllib.parse
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from digitlab import data, runs
from digitlab.serve import openapi, settings
from digitlab.serve.networks import Networks
from digitlab.serve.runs_folder import RunsFolder

KEEPALIVE_S = 15.0
RETRY_MS = 2000
# How often a run that another process trains is read: its epochs reach the page within this.
POLL_S = 0.1
# A Last-Event-ID: an epoch number (ASCII digits only: '³'.isdigit() is true, int('³') fails) or "end".
EVENT_ID = re.compile(r"[0-9]{1,9}|end")
# One Server-Sent Event of GET /api/runs/NAME/events (as the OpenAPI 3.2 itemSchema of an event stream).
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
    """The path of a run's weight tiles after `epoch` (the run's name quoted as one path segment)."""
    return f"/api/runs/{urllib.parse.quote(run_name, safe='')}/epochs/{epoch}/tiles.png"


def epoch_payload(run_name: str, epochs: int | None, history: dict, epoch: int, tiles: bool) -> dict:
    """The data of epoch `epoch`'s event (1-based), from a run's history; `tiles`: whether it has tiles."""
    payload = {"run": run_name, "epoch": epoch, "epochs": epochs}
    payload.update({key: history[key][epoch - 1] for key in runs.HISTORY_KEYS})
    payload["tiles"] = tiles_url(run_name, epoch) if tiles else None
    return payload


def end_payload(run: runs.Run) -> dict:
    """The data of a run's `end` event: its status, the epoch reached and what to do next."""
    status = run.status()
    payload = {"run": run.name, "status": status.get("status", "unknown"), "epoch": status.get("epoch", 0)}
    try:
        payload["epochs"] = run.config().epochs
    except runs.RunError:
        payload["epochs"] = None
    if payload["status"] == "interrupted":
        payload["resume"] = runs.resume_command(run.path)
    if status.get("message"):
        payload["message"] = status["message"]
    if payload["status"] == "complete":
        try:
            metrics = run.metrics()
            payload.update(wall_time_s=metrics.get("wall_time_s"), final_val_accuracy=metrics.get("final_val_accuracy"))
        except runs.RunError:
            pass
    return payload


def _history(run: runs.Run) -> dict:
    try:
        return run.history()
    except runs.RunError:  # No epoch written yet, or a damaged history: no epochs to show.
        return {key: [] for key in runs.HISTORY_KEYS}


class Follower:
    """A run that another process trains now, read every POLL_S seconds for as long as anyone watches
    it: its epoch events so far, the newest epoch's tiles, and its end once it stops running."""

    def __init__(self, home: RunsHome, run: runs.Run):
        self.home, self.run = home, run
        self.frames: list[bytes] = []  # Frame i is epoch i + 1's event.
        self.tiles: bytes | None = None  # The newest epoch's tiles as a `tiles` event.
        self.end: bytes | None = None
        self.viewers = 0
        self._changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    def wake(self) -> None:
        """Tells every viewer waiting in `changed` that there is something new (events, or the end)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> bool:
        """Waits for new events; False after `timeout` seconds without any."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _read(self) -> tuple[list[bytes], bytes | None, bytes | None]:
        """The epoch events not published yet, the newest one's tiles, and the end if the run stopped."""
        running = self.run.being_written()  # Read first: an epoch written after it is read next time.
        history = _history(self.run)
        config = self.run.config()
        recorded = set(self.run.recorded_epochs()) if config.record_epochs else set()
        done = len(history["val_accuracy"])
        if running and config.record_epochs:
            while done and done not in recorded:  # Its weights are being written: published next time.
                done -= 1
        frames = [
            _frame("epoch", str(epoch), epoch_payload(self.run.name, config.epochs, history, epoch, epoch in recorded))
            for epoch in range(len(self.frames) + 1, done + 1)
        ]
        tiles = None
        if frames and done in recorded:
            try:
                png = self.home.networks.tiles_png(self.run.name, done)
                data_url = "data:image/png;base64," + base64.b64encode(png).decode()
                tiles = f"event: tiles\ndata: {json.dumps({'epoch': done, 'png': data_url})}\n\n".encode()
            except runs.RunError:
                pass
        end = None if running else _frame("end", "end", end_payload(self.run))
        return frames, tiles, end

    async def follow(self) -> None:
        """Reads the run until it stops running, or until nobody watches it (then it is let go)."""
        try:
            while not self.home.closing:
                try:
                    frames, tiles, end = await run_in_threadpool(self._read)
                except runs.RunError:  # Its files were damaged while it trained: its end, as it stands.
                    frames, tiles, end = [], None, _frame("end", "end", end_payload(self.run))
                if frames:
                    self.frames.extend(frames)
                    self.tiles = tiles
                if end is not None:
                    self.home.networks.forget(self.run.name)  # Its last epoch is now its model.keras.
                    self.end = end
                if frames or end is not None:
                    self.wake()
                if end is not None or self.viewers == 0:
                    return
                await asyncio.sleep(POLL_S)
        finally:
            self.home.followers.pop(self.run.name, None)
            self.wake()


class RunsHome:
    """The runs folder this server serves: its runs by name (`folder`), their networks (`networks`),
    MNIST once loaded, the followers of the runs trained into it now, and the count of open event streams."""

    def __init__(self, runs_dir, data_path=None, max_viewers: int = settings.MAX_VIEWERS):
        self.runs_dir, self.data_path, self.max_viewers = runs.Path(runs_dir), data_path, max_viewers
        self.folder = RunsFolder(self.runs_dir)
        self.networks = Networks(self.folder, self.loaded)
        self.followers: dict[str, Follower] = {}
        self.viewers = 0
        self.closing = False
        self._loaded: data.Loaded | None = None
        self._loading = threading.Lock()

    def loaded(self) -> data.Loaded:
        """MNIST, loaded once (the first evaluation, the first page run kept, the page's MNIST)."""
        with self._loading:
            if self._loaded is None:
                self._loaded = data.load(self.data_path)
            return self._loaded

    def follower(self, run: runs.Run) -> Follower:
        """The follower of a run being trained now, started on first use; on the event loop."""
        follower = self.followers.get(run.name)
        if follower is None:
            follower = self.followers[run.name] = Follower(self, run)
            follower.task = asyncio.get_running_loop().create_task(follower.follow())
        return follower

    def close(self) -> None:
        """At shutdown: ends every event stream."""
        self.closing = True
        for follower in list(self.followers.values()):
            follower.wake()

    def saved_events(self, run: runs.Run) -> tuple[list[bytes], bytes]:
        """The events of a run nobody trains now: its epochs from history.json, and its end."""
        history = _history(run)
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


def home_of(request: Request) -> RunsHome:
    """The app's `RunsHome` (the runs folder it serves)."""
    return request.app.state.runs_home


router = APIRouter()


@router.get(
    "/api/runs/{name}/events",
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
    """The run's epochs as Server-Sent Events, live while another process trains it (`Last-Event-ID` resumes)."""
    home = home_of(request)
    run = home.folder.open(name)
    follower = home.followers.get(name)
    if follower is None and await run_in_threadpool(run.being_written):
        follower = home.follower(run)
    if follower is None:
        frames, end = await run_in_threadpool(home.saved_events, run)
    seen_text = request.headers.get("last-event-id", last_event_id or "").strip()
    if seen_text == "end":
        if follower is None or follower.end is not None:
            return Response(status_code=204)
        seen_text = ""
    if seen_text and not EVENT_ID.fullmatch(seen_text):
        raise HTTPException(400, f"Last-Event-ID must be an epoch number or 'end'; got {seen_text[:40]!r}.")
    if home.viewers >= home.max_viewers:
        raise HTTPException(
            503, f"This server has {home.viewers} viewers, as many as it allows (--max-viewers); try again later."
        )
    if follower is not None:
        follower.viewers += 1  # Counted now: the follower reads on while anyone watches.

    async def stream():
        home.viewers += 1  # Counted here, so that the finally below always uncounts it.
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            cursor = int(seen_text or 0)
            while True:
                shown = follower.frames if follower is not None else frames
                while cursor < len(shown):
                    yield shown[cursor]
                    cursor += 1
                    if follower is not None and follower.tiles and cursor == len(shown) and follower.end is None:
                        yield follower.tiles  # The newest epoch's picture, with its event.
                ended = follower.end if follower is not None else end
                if ended is not None:
                    yield ended
                    return
                if home.closing or (follower is not None and follower.task is not None and follower.task.done()):
                    return
                assert follower is not None
                if not await follower.changed(KEEPALIVE_S):
                    yield b": still training\n\n"
        finally:
            home.viewers -= 1
            if follower is not None:
                follower.viewers -= 1

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@router.get("/api/runs", responses=openapi.errors(409, s409="The runs folder cannot be read."))
async def list_runs(request: Request):
    """The saved runs (as `digitlab runs` lists them), with how many epochs each recorded, whether a
    process trains it now and, for one that cannot be opened, `problem`: why."""
    home = home_of(request)

    def rows():
        found = home.folder.listing()
        for row in found:
            row["training"] = row["status"] == "running"  # runs.Run.status: its writer is alive.
        return found

    return finite({"runs_dir": str(home.runs_dir), "runs": await run_in_threadpool(rows)})


@router.get("/api/runs/{name}", responses=openapi.errors(404, 409, s409="The run's files are damaged."))
async def run_detail(request: Request, name: str):
    """One run: its status, config, history (first seed) and the epochs whose network can be asked."""
    home = home_of(request)

    def detail():
        run = home.folder.open(name)
        recorded = run.recorded_epochs()
        status = run.status()
        return {
            "run": run.name,
            "status": status,
            "config": run.config().to_dict(),
            "history": _history(run),
            "recorded_epochs": [recorded[0], recorded[-1]] if recorded else None,
            "final_epoch": home.networks.final_epoch(run),
            "training": status.get("status") == "running",
        }

    return finite(await run_in_threadpool(detail))


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
    networks = home_of(request).networks
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
    networks = home_of(request).networks
    return finite(await run_in_threadpool(networks.evaluation, name, epoch))
