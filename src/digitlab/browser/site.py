"""`digitlab site DIR`: the page, its scripts, the browser engine and MNIST as static files.

Any static host serves the folder and the page trains in the browser, with no Python behind it:

    DIR/index.html           the page (marked static: it asks no server)
    DIR/sw.js                a service worker that keeps the page's files, so it works offline
    DIR/static/...           style, scripts, engine/ (engine.wasm, engine.js), page.json (the rules)
    DIR/static/mnist/...     MNIST (`mnist_asset`): index.json and four .u8.gz files
    DIR/_headers             COOP/COEP for hosts that read it (Netlify, Cloudflare Pages): threads
    DIR/.digitlab-site.json  what wrote the folder and its files, so that a later run may replace them

    from digitlab.browser import site
    written = site.write_site(Path("public"), data.load())   # the files written, relative to DIR

An existing folder is written into only if it is empty or a previous site (its
.digitlab-site.json); the previous site's files are removed first. Anything else is refused
with a sentence (SiteError), never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import digitlab
from digitlab import atomic, data, errors
from digitlab.browser import mnist_asset, rules

STATIC_SOURCE = Path(__file__).resolve().parent.parent / "serve" / "static"
MARKER = ".digitlab-site.json"
PAGE_META = '<meta name="digitlab-mode" content="static">'
HEADERS_FILE = """/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
/static/mnist/index.json
  Cache-Control: no-cache
"""


class SiteError(errors.DigitlabError):
    """The site's folder cannot be written (not empty and not a previous site, or not a folder)."""


def _check_folder(folder: Path) -> list[str]:
    """The files of a previous site in `folder` (to remove), [] for an empty or new folder; SiteError otherwise."""
    if folder.exists() and not folder.is_dir():
        raise SiteError(f"{folder} is a file, not a folder; give a new or empty folder for the site.")
    if not folder.exists() or not any(folder.iterdir()):
        return []
    marker = folder / MARKER
    try:
        previous = json.loads(marker.read_text())
        files = previous["files"]
        if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
            raise ValueError("files is not a list of names")
    except FileNotFoundError:
        raise SiteError(
            f"{folder} is not empty and is not a site digitlab wrote (it has no {MARKER}); "
            "give a new or empty folder, or a previous site's folder to replace it."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SiteError(f"{marker} is damaged ({error}); give a new or empty folder for the site.") from None
    return files


def _static_files() -> dict[str, bytes]:
    """The page's own files (the served static folder), relative name -> bytes."""
    files = {}
    for path in sorted(STATIC_SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "sw.js":
            files[f"static/{path.relative_to(STATIC_SOURCE).as_posix()}"] = path.read_bytes()
    return files


def site_files(loaded: data.Loaded) -> dict[str, bytes]:
    """Every file of the site, relative name -> bytes (the marker excepted)."""
    files = _static_files()
    page = (STATIC_SOURCE / "index.html").read_text(encoding="utf-8")
    files.pop("static/index.html", None)
    files["index.html"] = page.replace("<head>", f"<head>\n  {PAGE_META}", 1).encode()
    files["static/page.json"] = json.dumps(rules.page_document()).encode()
    for name, content in mnist_asset.build(loaded.arrays).items():
        files[f"static/mnist/{name}"] = content
    files["_headers"] = HEADERS_FILE.encode()
    # The service worker keeps the page's files (not MNIST, which the page caches itself, checked).
    kept = sorted(name for name in files if not name.startswith("static/mnist/") and name != "_headers")
    version = hashlib.sha256(b"".join(files[name] for name in kept)).hexdigest()[:16]
    worker = (STATIC_SOURCE / "sw.js").read_text(encoding="utf-8")
    listed = ["./", *kept]
    files["sw.js"] = (f"const VERSION = {json.dumps(version)};\nconst FILES = {json.dumps(listed)};\n{worker}").encode()
    return files


def write_site(folder: Path, loaded: data.Loaded) -> list[str]:
    """Writes the site into `folder` (see the module docstring); the names written, sorted."""
    folder = Path(folder)
    previous = _check_folder(folder)
    files = site_files(loaded)
    for name in previous:
        target = (folder / name).resolve()
        if folder.resolve() in target.parents and target.is_file():
            target.unlink()
    for emptied in sorted((path for path in folder.rglob("*") if path.is_dir()), reverse=True) if previous else []:
        if not any(emptied.iterdir()):
            emptied.rmdir()
    try:
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(path, content)
        atomic.write_json(folder / MARKER, {"digitlab": digitlab.__version__, "files": sorted(files)})
    except OSError as error:
        raise SiteError(atomic.describe_write_error(folder, error)) from None
    return sorted(files)


def engine_present() -> bool:
    """Whether the browser engine (static/engine/engine.js and engine.wasm) is in the package."""
    return all((STATIC_SOURCE / "engine" / name).is_file() for name in ("engine.js", "engine.wasm"))
