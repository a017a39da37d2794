"""Tests of imaging.py: any picture made into MNIST's 28x28 form, and bad pictures refused.

Made-up cases are synthetic drawings (clearly labelled below) of a few digits with
known strokes; the MNIST cases use the real data (DIGITLAB_DATA) and a shallow net
trained for a few seconds in a session fixture.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

import digitlab  # noqa: F401  (chooses the JAX backend)
from digitlab import data, imaging, predict

# Synthetic digits: strokes as polylines in a unit box (x right, y down).
STROKES = {
    "7": [[(0.15, 0.1), (0.85, 0.1), (0.4, 0.95)]],
    "4": [[(0.25, 0.05), (0.1, 0.6), (0.85, 0.6)], [(0.65, 0.05), (0.62, 0.95)]],
    "1": [[(0.55, 0.05), (0.45, 0.95)]],
    "0": "ellipse",
}


def draw_digit(digit="7", canvas=(280, 280), box=(60, 40, 200, 240), width=18, ink=255, paper=0, mode="L"):
    """SYNTHETIC: draws `digit` with a pen of `width` pixels in `box` (left, top, right, bottom)."""
    image = Image.new(mode, canvas, paper)
    pen = ImageDraw.Draw(image)
    left, top, right, bottom = box

    def place(point):
        return (left + point[0] * (right - left), top + point[1] * (bottom - top))

    if STROKES[digit] == "ellipse":
        pen.ellipse([place((0.1, 0.05)), place((0.9, 0.95))], outline=ink, width=width)
    else:
        for stroke in STROKES[digit]:
            pen.line([place(point) for point in stroke], fill=ink, width=width, joint="curve")
            for point in (stroke[0], stroke[-1]):  # Round pen ends, like a real pen.
                x, y = place(point)
                pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    return image


def encode(image, format_name, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format_name, **options)
    return buffer.getvalue()


def centre_of_mass(pixels):
    pixels = pixels.astype(float)
    rows, columns = np.indices(pixels.shape)
    return (rows * pixels).sum() / pixels.sum(), (columns * pixels).sum() / pixels.sum()


def correlation(first, second):
    """Pearson correlation of two 28x28 inputs, allowing the one-pixel shift that rounding the
    centre of mass can make."""
    first, second = first.astype(float), second.astype(float)
    return max(
        float(np.corrcoef(np.roll(first, (rows, columns), axis=(0, 1)).ravel(), second.ravel())[0, 1])
        for rows in (-1, 0, 1)
        for columns in (-1, 0, 1)
    )


def check_mnist_form(pixels):
    """Checks the marks of MNIST's recipe: uint8 28x28, longer side 20, centre of mass at 14."""
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert pixels.max() == 255
    rows = np.flatnonzero(pixels.any(axis=1))
    columns = np.flatnonzero(pixels.any(axis=0))
    longer = max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1)
    assert 19 <= longer <= 21, f"longer side {longer}"
    row, column = centre_of_mass(pixels)
    assert abs(row - 14) <= 0.75 and abs(column - 14) <= 0.75, (row, column)


@pytest.fixture(scope="session")
def reference():
    """Each synthetic digit drawn plainly (white pen on black, 280x280) and prepared."""
    return {digit: imaging.prepare_image(draw_digit(digit)) for digit in STROKES}


# --- The MNIST recipe on made-up drawings -------------------------------------------------

VARIANTS = {
    "off-centre": dict(canvas=(600, 400), box=(450, 230, 560, 380), width=14),
    "thick": dict(box=(60, 40, 200, 240), width=40),
    "thin": dict(canvas=(1200, 1200), box=(200, 150, 800, 1000), width=2),
    "inverted": dict(ink=0, paper=255),
    "large canvas": dict(canvas=(4000, 3000), box=(2500, 300, 3400, 1600), width=110, ink=20, paper=235),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("digit", sorted(STROKES))
def test_made_up_drawings_come_out_like_mnist(digit, variant, reference):
    pixels = imaging.prepare_image(draw_digit(digit, **VARIANTS[variant]))
    check_mnist_form(pixels)
    # A pen twice as thick stays twice as thick (MNIST's recipe does not thin strokes).
    assert correlation(pixels, reference[digit]) > (0.65 if variant == "thick" else 0.75)


def test_thin_strokes_are_thickened_towards_mnist_width(reference):
    thin = imaging.prepare_image(draw_digit("7", canvas=(1200, 1200), box=(200, 150, 800, 1000), width=1))
    width = imaging.stroke_width(thin / 255)
    assert 1.6 <= width <= 4, width  # A 1-pixel pen on a large canvas would be a faint hairline.
    assert correlation(thin, reference["7"]) > 0.75


@pytest.mark.parametrize("ink_colour", [(0, 0, 0, 255), (255, 255, 255, 255), (200, 30, 30, 255)])
def test_rgba_canvas_with_transparent_background(ink_colour, reference):
    """Strokes on a transparent canvas, as drawing programs and <canvas> export them."""
    image = Image.new("RGBA", (500, 500), (0, 0, 0, 0))
    mask = draw_digit("4", canvas=(500, 500), box=(100, 80, 380, 460), width=30)
    image.paste(Image.new("RGBA", (500, 500), ink_colour), mask=mask)
    pixels = imaging.prepare_image(encode(image, "PNG"))
    check_mnist_form(pixels)
    assert correlation(pixels, reference["4"]) > 0.8


def test_colour_photo_like_picture_with_noise(reference):
    """SYNTHETIC photo: blue ink on uneven off-white paper with noise, saved as JPEG."""
    rng = np.random.default_rng(0)
    mask = np.asarray(draw_digit("0", canvas=(640, 480), box=(220, 100, 420, 400), width=22)) / 255
    shade = np.linspace(215, 240, 640)[np.newaxis, :, np.newaxis]
    paper = np.broadcast_to(shade, (480, 640, 3)) + rng.normal(0, 4, (480, 640, 3))
    ink = np.array([30, 40, 120])
    picture = paper * (1 - mask[..., np.newaxis]) + ink * mask[..., np.newaxis]
    jpeg = encode(Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)), "JPEG", quality=80)
    pixels = imaging.prepare_image(jpeg)
    check_mnist_form(pixels)
    assert correlation(pixels, reference["0"]) > 0.8


def test_light_and_dark_versions_give_the_same_input():
    dark_on_light = imaging.prepare_image(draw_digit("7", ink=0, paper=255))
    light_on_dark = imaging.prepare_image(draw_digit("7"))
    assert np.abs(dark_on_light.astype(int) - light_on_dark.astype(int)).max() <= 2


# --- Every common format ------------------------------------------------------------------


def _as_format(name):
    picture = draw_digit("7", ink=0, paper=255)
    if name == "PNG":
        return encode(picture, "PNG")
    if name == "JPEG":
        return encode(picture.convert("RGB"), "JPEG", quality=90)
    if name == "WebP":
        return encode(picture.convert("RGB"), "WEBP", quality=90)
    if name == "BMP":
        return encode(picture.convert("RGB"), "BMP")
    if name == "GIF (first frame)":
        other = draw_digit("1", ink=0, paper=255)
        buffer = io.BytesIO()
        picture.save(buffer, format="GIF", save_all=True, append_images=[other], duration=100)
        return buffer.getvalue()
    if name == "TIFF":
        return encode(picture, "TIFF")
    if name == "16-bit PNG":
        return encode(Image.fromarray(np.asarray(picture).astype(np.uint16) * 257), "PNG")
    if name == "palette PNG with transparency":
        return encode(picture.convert("P"), "PNG", transparency=255)
    if name == "grey with alpha":
        return encode(Image.merge("LA", [picture, Image.new("L", picture.size, 255)]), "PNG")
    raise KeyError(name)


FORMATS = [
    "PNG",
    "JPEG",
    "WebP",
    "BMP",
    "GIF (first frame)",
    "TIFF",
    "16-bit PNG",
    "palette PNG with transparency",
    "grey with alpha",
]


@pytest.mark.parametrize("format_name", FORMATS)
def test_every_common_format(format_name, reference):
    pixels = imaging.prepare_image(_as_format(format_name))
    check_mnist_form(pixels)
    assert correlation(pixels, reference["7"]) > 0.9


def test_paths_file_objects_and_arrays_read_the_same(tmp_path):
    png = _as_format("PNG")
    path = tmp_path / "seven.png"
    path.write_bytes(png)
    from_bytes = imaging.prepare_image(png)
    np.testing.assert_array_equal(imaging.prepare_image(path), from_bytes)
    np.testing.assert_array_equal(imaging.prepare_image(str(path)), from_bytes)
    np.testing.assert_array_equal(imaging.prepare_image(io.BytesIO(png)), from_bytes)
    np.testing.assert_array_equal(imaging.prepare_image(np.asarray(Image.open(path))), from_bytes)


def test_camera_rotation_is_applied(reference):
    """A phone stores a portrait photo sideways with an EXIF orientation of 6 (rotate 90 clockwise)."""
    upright = draw_digit("7", ink=0, paper=255).convert("RGB")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = imaging.prepare_image(encode(sideways, "JPEG", quality=95, exif=exif.tobytes()))
    assert correlation(pixels, reference["7"]) > 0.9


# --- Real MNIST digits -------------------------------------------------------------------


def test_mnist_digits_are_nearly_unchanged(mnist):
    _, (x_valid, _) = mnist
    correlations = []
    for image in x_valid[:100]:
        prepared = imaging.prepare_image(image)
        check_mnist_form(prepared)
        correlations.append(correlation(prepared, image))
    # Hairline digits (thinner than 99% of MNIST's) are thickened a little, so a few differ more.
    assert np.mean(correlations) > 0.95 and min(correlations) > 0.75


def test_trained_model_reads_mnist_digits_rendered_big_and_off_centre(mnist, quick_model):
    """Real MNIST test digits, enlarged 5-25x onto a 1400x1000 sheet of paper (dark ink on light,
    at a random place), read back through the preparation: accuracy must hold, while shrinking the
    whole sheet to 28x28 (what naive code does) fails."""
    _, (x_valid, y_valid) = mnist
    rng = np.random.default_rng(0)
    images, labels = x_valid[:150], y_valid[:150]
    prepared, naive = [], []
    for image in images:
        side = int(rng.integers(140, 700))
        big = np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC), dtype=np.float64)
        sheet = np.zeros((1000, 1400))
        top, left = int(rng.integers(0, 1000 - side)), int(rng.integers(0, 1400 - side))
        sheet[top : top + side, left : left + side] = np.clip(big, 0, 255)
        sheet = 255 - sheet
        prepared.append(imaging.prepare_image(sheet))
        naive.append(255 - np.asarray(Image.fromarray(sheet.astype(np.uint8)).resize((28, 28), Image.LANCZOS)))

    def accuracy(pixels):
        return float((predict.pixel_probabilities(quick_model, np.stack(pixels)).argmax(axis=1) == labels).mean())

    original = accuracy(list(images))
    assert original > 0.85
    assert accuracy(prepared) >= original - 0.04
    assert accuracy(naive) < 0.5


def test_trained_model_reads_the_made_up_drawings(quick_model):
    for digit in ("7", "4", "1", "0"):
        for variant in sorted(VARIANTS):
            pixels = imaging.prepare_image(draw_digit(digit, **VARIANTS[variant]))
            probabilities = predict.pixel_probabilities(quick_model, pixels)[0]
            assert probabilities.argmax() == int(digit), (digit, variant, probabilities.round(2))


# --- Shapes for the model -----------------------------------------------------------------


def test_model_inputs_follow_the_model(quick_model):
    pixels = np.full((28, 28), 255, dtype=np.uint8)
    flat = imaging.model_inputs(pixels, quick_model)
    assert flat.shape == (1, 784) and flat.dtype == np.float32 and flat.max() == 1.0
    assert imaging.model_inputs(np.stack([pixels] * 3), (None, 28, 28, 1)).shape == (3, 28, 28, 1)  # LeNet's shape.
    np.testing.assert_array_equal(imaging.model_inputs(pixels, (None, 784)), data.to_inputs(pixels[np.newaxis]))
    with pytest.raises(ValueError, match="takes inputs of shape"):
        imaging.model_inputs(pixels, (None, 32, 32, 3))
    with pytest.raises(ValueError, match="Expected 28x28"):
        imaging.model_inputs(np.zeros((20, 20)), quick_model)


def test_preview_is_the_input_enlarged(tmp_path):
    pixels = imaging.prepare_image(draw_digit("7"))
    path = imaging.save_preview(pixels, tmp_path / "seen" / "seven.png", scale=10)
    shown = np.asarray(Image.open(path))
    assert shown.shape == (280, 280)
    np.testing.assert_array_equal(shown[::10, ::10], pixels)


# --- Bad pictures -------------------------------------------------------------------------


def _png_header_only(width, height):
    """A PNG that claims to be `width` x `height` but holds no pixel data (a bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + header
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(header))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )


BAD_PICTURES = {
    "empty bytes": (b"", ValueError, "empty"),
    "text": (b"hello, this is not a picture", ValueError, "not an image"),
    "truncated PNG": (_as_format("PNG")[:200], ValueError, "truncated"),
    "truncated JPEG": (_as_format("JPEG")[:600], ValueError, "truncated"),
    "blank white": (encode(Image.new("L", (100, 100), 255), "PNG"), ValueError, "empty"),
    "blank grey noise": (
        encode(Image.fromarray(np.random.default_rng(0).integers(120, 130, (64, 64)).astype(np.uint8)), "PNG"),
        ValueError,
        "empty",
    ),
    "fully transparent": (encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG"), ValueError, "transparent"),
    "wider than 4096": (encode(Image.new("L", (4097, 8), 0), "PNG"), imaging.ImageTooLargeError, "4096"),
    "bomb header 5000x5000": (_png_header_only(5000, 5000), imaging.ImageTooLargeError, "4096"),
    "bomb header 40000x40000": (_png_header_only(40000, 40000), imaging.ImageTooLargeError, "4096"),
}


@pytest.mark.parametrize("case", sorted(BAD_PICTURES))
def test_bad_pictures_raise_clear_value_errors(case):
    content, error_type, message = BAD_PICTURES[case]
    with pytest.raises(error_type, match=message):
        imaging.prepare_image(content)


def test_bad_sources_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="No image file"):
        imaging.prepare_image(tmp_path / "missing.png")
    huge = tmp_path / "huge.bmp"
    with open(huge, "wb") as file:
        file.truncate(imaging.MAX_FILE_BYTES + 1)  # Sparse: no disk space used.
    with pytest.raises(imaging.ImageTooLargeError, match="bytes"):
        imaging.prepare_image(huge)
    with pytest.raises(ValueError, match="Cannot read an image from a int"):
        imaging.prepare_image(42)
    with pytest.raises(ValueError, match="NaN"):
        imaging.prepare_image(np.full((28, 28), np.nan))
    with pytest.raises(ValueError, match="0-255"):
        imaging.prepare_image(np.full((28, 28), 300.0))
    with pytest.raises(ValueError, match="shape"):
        imaging.prepare_image(np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="empty"):
        imaging.prepare_image(np.zeros((28, 28)))
