"""MNIST for the browser: four gzip'ed raw uint8 arrays and a small JSON index of their sizes and SHA-256s.

The page fetches `mnist/index.json` (never cached by the browser: it names the current files),
then each array's file, named by its content (`x_train.<first 16 hex of its SHA-256>.u8.gz`)
so that a host may cache it forever. It decompresses the file itself (DecompressionStream),
checks the byte count and the SHA-256 of the raw bytes (the ones `data.fingerprint` gives
and run folders record), and only then keeps it in the Cache API. The files are sent as
`application/octet-stream` without Content-Encoding, so any static host serves them as they are.

    from digitlab.browser import mnist_asset
    asset = mnist_asset.build(data.load().arrays)     # {"index.json": bytes, "x_train....u8.gz": bytes, ...}
    mnist_asset.write(asset, Path("site/static/mnist"))
    arrays = mnist_asset.read(Path("site/static/mnist"))   # the same four arrays, checked
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

from digitlab import atomic, data

INDEX_FILE = "index.json"
FORMAT_VERSION = 1
# gzip level 6: MNIST's 54.9 MB of raw bytes become 11.5 MB in about 1.3 s (measured under load).
GZIP_LEVEL = 6


class AssetError(data.DataError):
    """An MNIST asset folder is missing a file, or a file is not what its index says."""


def build(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The asset's files (name -> bytes): one .u8.gz per array and index.json describing them."""
    index: dict = {"format": FORMAT_VERSION, "arrays": {}}
    files: dict[str, bytes] = {}
    for key in data.NPZ_KEYS:
        raw = np.ascontiguousarray(arrays[key], dtype=np.uint8).tobytes()
        sha256 = hashlib.sha256(raw).hexdigest()
        packed = gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)
        name = f"{key}.{sha256[:16]}.u8.gz"
        files[name] = packed
        index["arrays"][key] = {
            "file": name,
            "shape": list(arrays[key].shape),
            "dtype": "uint8",
            "bytes": len(raw),
            "sha256": sha256,
            "gzip_bytes": len(packed),
            "gzip_sha256": hashlib.sha256(packed).hexdigest(),
        }
    files[INDEX_FILE] = json.dumps(index, indent=1).encode()
    return files


def index_of(files: dict[str, bytes]) -> dict:
    """The asset's index (INDEX_FILE) as a dict: which file holds which array."""
    return json.loads(files[INDEX_FILE])


def write(files: dict[str, bytes], folder: Path) -> None:
    """Writes the asset's files into `folder` (made if missing), each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        atomic.write_bytes(folder / name, content)


def read(folder: Path) -> dict[str, np.ndarray]:
    """The four arrays of an asset folder, each checked against the index (size and SHA-256)."""
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
    except FileNotFoundError:
        raise AssetError(f"{folder} holds no MNIST asset ({INDEX_FILE} is missing).") from None
    except (OSError, ValueError) as error:
        raise AssetError(f"{folder / INDEX_FILE} is not readable JSON ({error}).") from None
    arrays = {}
    for key in data.NPZ_KEYS:
        entry = index["arrays"][key]
        path = folder / entry["file"]
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError) as error:
            raise AssetError(f"{path} is missing or not gzip ({error}).") from None
        if len(raw) != entry["bytes"] or hashlib.sha256(raw).hexdigest() != entry["sha256"]:
            raise AssetError(f"{path} does not hold the bytes its index describes; write the asset again.")
        arrays[key] = np.frombuffer(raw, np.uint8).reshape(entry["shape"])
    return arrays
