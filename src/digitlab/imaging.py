"""Any picture of a digit made into a 28x28 MNIST-style input, the way MNIST itself was made.

The command line (`digitlab predict RUN IMAGE...`) and the web server share one
function, `prepare_image`, so a file and an upload are read identically:

    from digitlab import imaging
    pixels = imaging.prepare_image("photo.jpg")            # (28, 28) uint8, ink high, as MNIST
    inputs = imaging.model_inputs(pixels, model)            # (1, 784) or (1, 28, 28, 1) float32 0-1
    imaging.save_preview(pixels, "seen.png")                # what the network saw, enlarged

The steps:

1. Open: PNG, JPEG, WebP, BMP, GIF (first frame), TIFF, from a path, bytes or a
   file object. Pictures over `MAX_SIDE` pixels on either side are refused from
   their header, before any decoding (decompression bombs); truncated or non-image
   files are refused with a message. A camera's EXIF rotation is applied.
2. Ink: transparency is flattened onto a background that contrasts with the
   opaque strokes; colour becomes grey; the background is a plane fitted to the
   picture's border (so an unevenly lit photo of paper works), and if it is light
   (dark ink on paper) the picture is inverted, because MNIST has light ink (high
   values) on a dark (zero) field. The background is subtracted and anything
   fainter than `NOISE_FLOOR` of the strongest ink, or than four times the
   border's noise, is cleared (paper texture, sensor noise, JPEG ringing).
3. As MNIST: crop to the ink's bounding box, scale the longer side to 20 pixels
   keeping the aspect ratio (antialiased), and place the result in a 28x28 field
   so that its centre of mass falls on the field's centre (14, 14).

One step goes beyond MNIST's recipe: strokes that would come out thinner than
`MIN_STROKE` pixels in the 20-pixel box (a 1-pixel pen on a large canvas) are
thickened first, towards MNIST's typical width, since a network trained on MNIST
has never seen hairlines. Bad input raises `ValueError` (`ImageTooLargeError` for
oversized pictures) with a sentence saying what was wrong.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitlab import errors

# The largest picture accepted, per side, and the largest upload in bytes.
MAX_SIDE = 4096
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
# The upload limit in words, for the messages and documents that name it.
MAX_UPLOAD_TEXT = f"{MAX_UPLOAD_BYTES // 1024**2} MB"
# Files named on the command line may be larger (an uncompressed 4096x4096 BMP is 64 MB).
MAX_FILE_BYTES = 100 * 1024 * 1024
# Pillow warns above this many pixels and refuses at twice as many; our own side
# check refuses anything larger first, so a bomb is never decoded.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE

FIELD = 28  # MNIST's field, in pixels.
BOX = 20  # MNIST's digits are scaled so their longer side is this many pixels.
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates (measured: 13.99, 14.00).
NOISE_FLOOR = 0.1  # Ink fainter than this share of the strongest ink is background noise.
MIN_CONTRAST = 24  # Grey levels (of 255) the ink must differ from the background by.
# Strokes thinner than this (in pixels of the 20-pixel box; 1% of MNIST's digits are) are
# thickened to about TARGET_STROKE (a quarter of MNIST's are thinner; its median is 1.95).
MIN_STROKE = 1.0
TARGET_STROKE = 1.6
WORKING_SIDE = 80  # Large crops are max-pooled to about this size before thickening.

_EXIF_ORIENTATION = 0x0112
_open_lock = threading.Lock()


class ImageError(errors.DigitlabError):
    """A picture or pixel array digitlab cannot read as a digit; the message says why."""


class ImageTooLargeError(ImageError):
    """The picture (or upload) is larger than digitlab accepts."""


def open_image(source) -> Image.Image:
    """Opens and fully decodes a picture from a path, bytes or a binary file object.

    Returns the first frame, EXIF-rotated. Raises ImageError for files that are not
    pictures or are truncated, and ImageTooLargeError for pictures over MAX_SIDE.
    """
    name = "The image"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise ImageError(f"No image file at {path}; check the path.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageTooLargeError(
                f"{path} is {path.stat().st_size:,} bytes; digitlab reads pictures of up to "
                f"{MAX_FILE_BYTES:,} bytes. Scale it down or crop it to the digit."
            )
        stream = io.BytesIO(path.read_bytes())
    elif isinstance(source, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        stream = source
    else:
        raise ImageError(
            f"Cannot read an image from a {type(source).__name__}; give a path, bytes or a binary file object."
        )
    if isinstance(stream, io.BytesIO) and not stream.getbuffer().nbytes:
        raise ImageError(f"{name} is empty (0 bytes); send a PNG, JPEG, WebP, BMP or GIF file.")
    try:
        # Warnings filters are process-wide, so the lock keeps concurrent uploads from
        # undoing each other's "turn the bomb warning into an error" setting.
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(stream)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageTooLargeError(
            f"{name} has too many pixels (a possible decompression bomb); the limit is "
            f"{MAX_SIDE}x{MAX_SIDE}. Send a smaller picture."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name} is not an image digitlab can read; send a PNG, JPEG, WebP, BMP or GIF file."
        ) from None
    except Exception as error:  # Pillow's header parsers raise many kinds on malformed files.
        raise ImageError(
            f"{name} could not be read as an image ({error}); it is probably truncated or corrupt."
        ) from None
    width, height = image.size
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} pixels; the limit is {MAX_SIDE} on each side. "
            "Scale it down or crop it to the digit."
        )
    if width < 1 or height < 1:
        raise ImageError(f"{name} has no pixels ({width}x{height}).")
    try:
        image.seek(0)
        image.load()
        if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
    except Exception as error:  # Decoders raise OSError, SyntaxError, ValueError, zlib errors...
        raise ImageError(
            f"{name} could not be decoded ({error}); it is probably truncated or corrupt. Save or export it again."
        ) from None
    return image


def peek_size(data: bytes) -> tuple[int, int] | None:
    """A picture's (width, height) from its header alone, or None if the header is unreadable."""
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Exception:  # The full read reports the problem properly.
        return None


def grey_levels(image: Image.Image) -> np.ndarray:
    """The picture as float32 grey levels 0-255, transparency flattened onto a contrasting background."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        levels = np.asarray(image, dtype=np.float32)
        if levels.max(initial=0) > 255:
            levels = levels * (255.0 / 65535.0)
        return np.clip(levels, 0, 255)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    grey = np.asarray(image.convert("RGBA").convert("L"), dtype=np.float32)
    opaque = alpha > 0.5
    if not opaque.any():
        raise ImageError("The image is fully transparent; there is no digit to read.")
    if opaque.all():
        return grey
    # Strokes drawn on a transparent canvas: put them on white if they are dark,
    # on black if they are light, so they stay visible.
    background = 255.0 if grey[opaque].mean() < 128 else 0.0
    return grey * alpha + background * (1.0 - alpha)


def background_plane(levels: np.ndarray) -> tuple[np.ndarray | float, float]:
    """The paper's brightness as a plane fitted to the picture's border (a photo is often lit
    unevenly) and the noise around it (a robust standard deviation), in grey levels. A border
    of one flat colour (a canvas, an MNIST digit) gives that colour and no noise."""
    rows, columns = levels.shape
    frame = max(1, round(0.05 * min(rows, columns)))
    # The frame's four strips as (row, column) index grids; long strips are sampled.
    step = max(1, (rows + columns) * frame // 5000)
    all_rows, all_columns = np.arange(0, rows, step), np.arange(0, columns, step)
    edge_rows = np.r_[np.arange(frame), np.arange(rows - frame, rows)]
    edge_columns = np.r_[np.arange(frame), np.arange(columns - frame, columns)]
    border_rows = np.concatenate([np.repeat(edge_rows, all_columns.size), np.tile(all_rows, edge_columns.size)])
    border_columns = np.concatenate([np.tile(all_columns, edge_rows.size), np.repeat(edge_columns, all_rows.size)])
    values = levels[border_rows, border_columns].astype(np.float64)
    if values.min() == values.max():
        return float(values[0]), 0.0
    design = np.column_stack([np.ones_like(values), border_rows / rows, border_columns / columns])
    keep = np.ones(values.size, dtype=bool)
    for _ in range(2):  # The second fit leaves out strokes that reach the border.
        coefficients = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residuals = values - design @ coefficients
        spread = 1.4826 * float(np.median(np.abs(residuals[keep])))
        keep = np.abs(residuals) <= max(3 * spread, 2.0)
    plane = (
        np.float32(coefficients[0])
        + np.float32(coefficients[1]) * (np.arange(rows, dtype=np.float32) / rows)[:, np.newaxis]
        + np.float32(coefficients[2]) * (np.arange(columns, dtype=np.float32) / columns)[np.newaxis, :]
    )
    return plane, spread


def ink_map(levels: np.ndarray) -> np.ndarray:
    """Float32 ink in 0-1 (1 = strongest ink, 0 = background) from grey levels of either polarity."""
    levels = np.asarray(levels, dtype=np.float32)
    if levels.ndim != 2 or levels.size == 0:
        raise ImageError(f"Expected a 2-D grey image; got an array of shape {levels.shape}.")
    if not np.isfinite(levels).all():
        raise ImageError("The image holds NaN or infinite values; pixels must be numbers 0-255.")
    plane, noise = background_plane(levels)
    # MNIST is light ink on a dark field; a light background means dark ink, so invert.
    ink = plane - levels if float(np.mean(plane)) > 127.5 else levels - plane
    strongest = float(ink.max())
    if strongest < MIN_CONTRAST:
        raise ImageError(
            "The image is empty: no ink stands out from the background. Draw or photograph a digit with clear contrast."
        )
    # Paper texture, sensor noise and JPEG ringing lie below the floor and are cleared.
    floor = max(NOISE_FLOOR * strongest, 4.0 * noise)
    if floor > 0.8 * strongest:
        raise ImageError(
            "The image is empty: nothing stands out from the background's noise. "
            "Draw or photograph a digit with clear contrast."
        )
    ink = (ink - floor) / (strongest - floor)
    np.clip(ink, 0, 1, out=ink)
    return ink


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the inked area over the length of its outline."""
    inked = ink > 0.5
    area = int(inked.sum())
    if area == 0:
        return 0.0
    padded = np.pad(inked, 1)
    edges = int((padded[1:, :] != padded[:-1, :]).sum() + (padded[:, 1:] != padded[:, :-1]).sum())
    return 2.0 * area / max(edges, 1)


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(ink.any(axis=1))
    columns = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise ImageError("The image is empty: no ink was found. Draw or photograph a digit.")
    return ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def _max_pool(ink: np.ndarray, factor: int) -> np.ndarray:
    rows, columns = ink.shape
    padded = np.pad(ink, ((0, -rows % factor), (0, -columns % factor)))
    return padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).max(axis=(1, 3))


def _dilate(ink: np.ndarray, radius: int) -> np.ndarray:
    """Grows the strokes by `radius` pixels (a 3x3 maximum, repeated)."""
    grown = np.pad(ink, radius)
    for _ in range(radius):
        padded = np.pad(grown, 1)
        shifted = [
            padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        grown = np.max(shifted, axis=0)
    return grown


def center_like_mnist(ink: np.ndarray) -> np.ndarray:
    """MNIST's own normalisation of an ink map (0-1, any size) into a (28, 28) uint8 field."""
    digit = _crop_to_ink(ink)
    longer = max(digit.shape)
    if longer > 2 * WORKING_SIDE:
        # Max-pooling (not averaging) keeps hairlines from fading away before the
        # width is measured.
        digit = _max_pool(digit, longer // WORKING_SIDE)
        longer = max(digit.shape)
    width = stroke_width(digit) * BOX / longer
    if 0 < width < MIN_STROKE:
        if longer < WORKING_SIDE:
            # Enlarged first, so the strokes can grow by a fraction of a final pixel.
            factor = WORKING_SIDE / longer
            size = (max(1, round(digit.shape[1] * factor)), max(1, round(digit.shape[0] * factor)))
            digit = np.asarray(Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
            longer = max(digit.shape)
            width = stroke_width(digit) * BOX / longer
        radius = round((TARGET_STROKE - width) * longer / BOX / 2)
        if radius > 0:
            digit = _crop_to_ink(_dilate(digit, radius))
            longer = max(digit.shape)
    scale = BOX / longer
    height = max(1, round(digit.shape[0] * scale))
    breadth = max(1, round(digit.shape[1] * scale))
    resized = Image.fromarray(digit.astype(np.float32)).resize((breadth, height), Image.Resampling.LANCZOS)
    small = np.clip(np.asarray(resized, dtype=np.float32), 0, 1)
    strongest = small.max()
    if strongest <= 0:
        raise ImageError("The image is empty: the ink vanished when scaled down. Draw a larger digit.")
    small /= strongest
    total = small.sum()
    centre_row = (small.sum(axis=1) * np.arange(height)).sum() / total
    centre_column = (small.sum(axis=0) * np.arange(breadth)).sum() / total
    top = int(np.clip(round(CENTRE - centre_row), 0, FIELD - height))
    left = int(np.clip(round(CENTRE - centre_column), 0, FIELD - breadth))
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + height, left : left + breadth] = small
    return np.round(field * 255).astype(np.uint8)


def prepare_image(source) -> np.ndarray:
    """The one preparation CLI and server share: a picture (path, bytes, file, PIL image
    or NumPy array) -> (28, 28) uint8 pixels, light ink on dark, centred as MNIST."""
    if isinstance(source, np.ndarray):
        return prepare_array(source)
    image = source if isinstance(source, Image.Image) else open_image(source)
    return center_like_mnist(ink_map(grey_levels(image)))


def prepare_array(array: np.ndarray) -> np.ndarray:
    """`prepare_image` for a NumPy picture: (H, W) grey or (H, W, 3/4) colour, values 0-255."""
    array = np.asarray(array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ImageError(f"Expected a numeric image array 0-255; got dtype {array.dtype}.")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
            raise ImageError("Colour image values must be finite numbers 0-255.")
        return prepare_image(Image.fromarray(np.round(array).astype(np.uint8)))
    if array.ndim != 2:
        raise ImageError(f"Expected an (H, W) or (H, W, 3/4) image array; got shape {array.shape}.")
    if array.shape[0] > MAX_SIDE or array.shape[1] > MAX_SIDE:
        raise ImageTooLargeError(f"The image is {array.shape[1]}x{array.shape[0]}; the limit is {MAX_SIDE} a side.")
    levels = array.astype(np.float32)
    if np.isfinite(levels).all() and (levels.min() < 0 or levels.max() > 255):
        raise ImageError("Image values must lie in 0-255.")
    return center_like_mnist(ink_map(levels))


def model_inputs(pixels: np.ndarray, model_or_shape) -> np.ndarray:
    """(28, 28) or (N, 28, 28) uint8 pixels -> float32 0-1 shaped as the model wants
    (N, 784) or (N, 28, 28, 1), read from `model.input_shape` (or a shape given directly)."""
    shape = getattr(model_or_shape, "input_shape", model_or_shape)
    pixels = np.asarray(pixels)
    if pixels.shape[-2:] != (FIELD, FIELD):
        raise ImageError(f"Expected 28x28 pixels; got shape {pixels.shape}.")
    batch = pixels.reshape(-1, FIELD, FIELD).astype(np.float32) / 255.0
    per_image = tuple(shape[1:])
    if per_image == (FIELD * FIELD,):
        return batch.reshape(-1, FIELD * FIELD)
    if per_image in ((FIELD, FIELD, 1), (FIELD, FIELD)):
        return batch.reshape((-1,) + per_image)
    raise ImageError(f"The model takes inputs of shape {tuple(shape)}; digitlab feeds 784 vectors or 28x28x1 images.")


def preview_image(pixels: np.ndarray, scale: int = 10) -> Image.Image:
    """The 28x28 input enlarged with sharp pixels, so a person can see what the network saw."""
    pixels = np.asarray(pixels, dtype=np.uint8).reshape(FIELD, FIELD)
    return Image.fromarray(pixels).resize((FIELD * scale, FIELD * scale), Image.Resampling.NEAREST)


def save_preview(pixels: np.ndarray, path: str | os.PathLike, scale: int = 10) -> Path:
    """Writes `preview_image` as a PNG and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    preview_image(pixels, scale).save(path, format="PNG")
    return path
