"""Tests of serving.py and predict.py: every endpoint, every kind of bad input, the fast path
against model.predict, and against a real uvicorn server (marked heavy): oversized uploads from a
client that does not wait for `Expect: 100-continue`, and a short loopback load test.

The model is the book's shallow architecture trained for 3 quick epochs on real MNIST
(DIGITLAB_DATA) in a session fixture, saved and loaded back as a run's model.keras is.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

import digitlab  # noqa: F401  (chooses the JAX backend)
from digitlab import data, imaging, predict
from digitlab.serve import app as serving
from digitlab.serve import bodies


@pytest.fixture(scope="session")
def client(quick_model):
    with TestClient(serving.create_app(quick_model, run_name="test-run")) as test_client:
        yield test_client


def seven_png(size=280, dark_on_light=False) -> bytes:
    """SYNTHETIC: a '7' drawn with a thick pen, as the page's canvas would send it."""
    image = Image.new("L", (size, size), 255 if dark_on_light else 0)
    ImageDraw.Draw(image).line(
        [(0.2 * size, 0.2 * size), (0.8 * size, 0.2 * size), (0.45 * size, 0.85 * size)],
        fill=0 if dark_on_light else 255,
        width=size // 14,
        joint="curve",
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- predict.py ---------------------------------------------------------------------------


def test_fast_path_equals_model_predict(quick_model, mnist):
    _, (x_valid, _) = mnist
    inputs = data.to_inputs(x_valid[:80])
    expected = quick_model.predict(inputs, verbose=0)
    one_at_a_time = np.concatenate([predict.probabilities(quick_model, inputs[i : i + 1]) for i in range(80)])
    np.testing.assert_allclose(one_at_a_time, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predict.probabilities(quick_model, inputs[:40]), expected[:40], rtol=0, atol=1e-6)
    np.testing.assert_allclose(predict.probabilities(quick_model, inputs), expected, rtol=0, atol=1e-6)  # > 64: predict
    np.testing.assert_allclose(predict.probabilities(quick_model, inputs[0]), expected[:1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="takes inputs of shape"):
        predict.probabilities(quick_model, np.zeros((1, 28, 28)))


def test_fast_path_follows_weights_changed_after_first_use(quick_model, mnist):
    _, (x_valid, _) = mnist
    twin = keras.models.clone_model(quick_model)
    twin.set_weights(quick_model.get_weights())
    inputs = data.to_inputs(x_valid[:1])
    predict.probabilities(twin, inputs)
    twin.set_weights([weight * 0.5 for weight in quick_model.get_weights()])
    np.testing.assert_allclose(predict.probabilities(twin, inputs), twin.predict(inputs, verbose=0), atol=1e-6)


def test_predict_index(quick_model, mnist):
    _, (x_valid, y_valid) = mnist
    result = predict.predict_index(quick_model, x_valid, y_valid, 0)
    assert result["label"] == int(y_valid[0]) and result["index"] == 0
    assert len(result["probabilities"]) == 10 and abs(sum(result["probabilities"]) - 1) < 1e-4
    assert result["digit"] == int(np.argmax(result["probabilities"]))
    assert result["correct"] == (result["digit"] == result["label"])
    json.dumps(result)
    text = predict.format_result(result)
    assert "validation image 0" in text and f"true label {y_valid[0]}" in text
    for bad in (-1, len(x_valid), 10**9):
        with pytest.raises(ValueError, match="from 0 to 9999"):
            predict.predict_index(quick_model, x_valid, y_valid, bad)
    with pytest.raises(ValueError, match="whole number"):
        predict.predict_index(quick_model, x_valid, y_valid, 1.5)


def test_predict_files(quick_model, tmp_path):
    seven = tmp_path / "seven.png"
    seven.write_bytes(seven_png(dark_on_light=True))
    other = tmp_path / "other" / "seven.png"
    other.parent.mkdir()
    other.write_bytes(seven_png(size=500))
    results = predict.predict_files(quick_model, [seven, other], show_dir=tmp_path / "seen")
    for result in results:
        assert result["digit"] == 7
        assert [entry["digit"] for entry in result["top3"]][0] == 7 and len(result["top3"]) == 3
        assert result["top3"][0]["probability"] >= result["top3"][1]["probability"] >= result["top3"][2]["probability"]
        shown = np.asarray(Image.open(result["shown"]))
        assert shown.shape == (280, 280)
        np.testing.assert_array_equal(shown[::10, ::10], imaging.prepare_image(Path(result["path"])))
    assert results[0]["shown"] != results[1]["shown"]  # Same file name, two previews.
    json.dumps(results)
    assert "seven.png: 7" in predict.format_results(results)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="broken.png"):
        predict.predict_files(quick_model, [seven, broken])
    skipped = predict.predict_files(quick_model, [seven, broken], skip_errors=True)
    assert skipped[0]["digit"] == 7 and "not an image" in skipped[1]["error"]
    assert "error" in predict.format_result(skipped[1])
    with pytest.raises(ValueError, match="No image files"):
        predict.predict_files(quick_model, [])


# --- Endpoints ----------------------------------------------------------------------------


def test_page_and_its_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<canvas id="pad"' in page.text and 'src="static/app.js"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # Nothing from the network.
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert "https://" not in answer.text


def test_health(client, quick_model):
    answer = client.get("/api/health")
    assert answer.status_code == 200
    health = answer.json()
    assert health["status"] == "ok" and health["run"] == "test-run"
    assert health["input_shape"] == [784] and health["parameters"] == quick_model.count_params() == 50890
    assert float(answer.headers["x-process-time-ms"]) >= 0


def test_docs_and_openapi(client):
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(content)
    assert "/api/health" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_json_pixels_equal_model_predict(client, quick_model, mnist):
    _, (x_valid, y_valid) = mnist
    for index in range(5):
        answer = client.post("/api/predict", json={"pixels": x_valid[index].tolist()})
        assert answer.status_code == 200
        result = answer.json()
        assert result["source"] == "pixels"
        np.testing.assert_array_equal(result["pixels"], x_valid[index])  # Taken as they are.
        expected = quick_model.predict(data.to_inputs(x_valid[index : index + 1]), verbose=0)[0]
        np.testing.assert_allclose(result["probabilities"], expected, rtol=0, atol=1e-6)
        assert result["digit"] == int(np.argmax(expected))
        assert float(answer.headers["x-process-time-ms"]) > 0


def test_json_pixels_can_be_prepared_like_a_picture(client):
    small = np.zeros((28, 28), dtype=np.uint8)
    small[2:10, 3:5] = 255  # A short bar in a corner.
    result = client.post("/api/predict", json={"pixels": small.tolist(), "prepare": True}).json()
    np.testing.assert_array_equal(result["pixels"], imaging.prepare_image(small))


@pytest.mark.parametrize("how", ["multipart", "raw body"])
def test_uploaded_picture_equals_model_predict_on_prepared_pixels(client, quick_model, how):
    png = seven_png(dark_on_light=True)
    if how == "multipart":
        answer = client.post("/api/predict", files={"file": ("seven.png", png, "image/png")})
    else:
        answer = client.post("/api/predict", content=png, headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["digit"] == 7 and result["source"] == "image"
    pixels = np.array(result["pixels"], dtype=np.uint8)
    np.testing.assert_array_equal(pixels, imaging.prepare_image(png))  # The CLI's preparation.
    expected = quick_model.predict(imaging.model_inputs(pixels, quick_model), verbose=0)[0]
    np.testing.assert_allclose(result["probabilities"], expected, rtol=0, atol=1e-6)


def test_large_photo_is_read_in_a_worker_thread(client):
    """SYNTHETIC photo, 2400x1800 (over bodies.INLINE_PIXELS): dark ink on grey paper, JPEG."""
    photo = Image.new("RGB", (2400, 1800), (200, 198, 190))
    ImageDraw.Draw(photo).line([(1300, 400), (1800, 400), (1450, 1500)], fill=(30, 30, 40), width=70, joint="curve")
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=85)
    answer = client.post("/api/predict", files={"file": ("photo.jpg", buffer.getvalue(), "image/jpeg")})
    assert answer.status_code == 200 and answer.json()["digit"] == 7


def test_multipart_with_another_field_name(client):
    answer = client.post("/api/predict", files={"image": ("seven.png", seven_png(), "image/png")})
    assert answer.status_code == 200 and answer.json()["digit"] == 7


# --- Bad input: each a 4xx with a sentence, never a 500 -----------------------------------


def _png_header_only(width, height):
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


def _rows(value):
    return [[0] * 28 for _ in range(27)] + [[0] * 27 + [value]]


def _json(document):
    return json.dumps(document).encode()


def _upload(content, name="picture.png"):
    boundary = "testboundary"
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


JSON = "application/json"
WIDE = io.BytesIO()
Image.new("L", (4097, 4), 0).save(WIDE, format="PNG")
BAD_REQUESTS = {
    "empty body": (b"", JSON, 422, "empty"),
    "not JSON": (b"{pixels: [", JSON, 400, "not valid JSON"),
    "JSON list": (_json([[0] * 28] * 28), JSON, 422, '"pixels" key'),
    "no pixels key": (_json({"pixel": []}), JSON, 422, '"pixels" key'),
    "unknown key": (_json({"pixels": _rows(0), "colour": 1}), JSON, 422, "Unknown key"),
    "27 rows": (_json({"pixels": [[0] * 28] * 27}), JSON, 422, "list of 28 rows; got a list of 27"),
    "pixels a string": (_json({"pixels": "zeros"}), JSON, 422, "list of 28 rows; got str"),
    "short row": (_json({"pixels": [[0] * 28] * 27 + [[0] * 5]}), JSON, 422, "Row 27 .* holds 5 values"),
    "flat 784": (_json({"pixels": [0] * 784}), JSON, 422, "list of 28 rows"),
    "28x28x1": (_json({"pixels": [[[0]] * 28] * 28}), JSON, 422, r"pixels\[0\]\[0\] is \[0\]"),
    "string value": (_json({"pixels": _rows("7")}), JSON, 422, r'pixels\[27\]\[27\] is "7"'),
    "null value": (_json({"pixels": _rows(None)}), JSON, 422, "is null"),
    "boolean value": (_json({"pixels": _rows(True)}), JSON, 422, "is true"),
    "negative": (_json({"pixels": _rows(-1)}), JSON, 422, "lie in 0-255"),
    "over 255": (_json({"pixels": _rows(256)}), JSON, 422, "lie in 0-255"),
    "huge integer": (_json({"pixels": _rows(10**400)}), JSON, 422, "lie in 0-255"),
    "1e999": (_json({"pixels": _rows(0)}).replace(b"0]]", b"1e999]]"), JSON, 422, "lie in 0-255"),
    "NaN": (_json({"pixels": _rows(0)}).replace(b"0]]", b"NaN]]"), JSON, 422, "NaN"),
    "Infinity": (_json({"pixels": _rows(0)}).replace(b"0]]", b"Infinity]]"), JSON, 422, "Infinity"),
    "-Infinity": (_json({"pixels": _rows(0)}).replace(b"0]]", b"-Infinity]]"), JSON, 422, "Infinity"),
    "prepare not boolean": (_json({"pixels": _rows(0), "prepare": "yes"}), JSON, 422, "true or false"),
    "prepare blank": (_json({"pixels": _rows(0), "prepare": True}), JSON, 422, "empty"),
    "deeply nested": (b"[" * 100000 + b"]" * 100000, JSON, 400, "nested too deeply"),
    "text as image": (b"hello", "image/png", 422, "not an image"),
    "text upload": (*_upload(b"hello"), 422, "not an image"),
    "empty upload": (*_upload(b""), 422, "empty"),
    "truncated PNG": (seven_png()[:150], "image/png", 422, "truncated"),
    "truncated PNG upload": (*_upload(seven_png()[:150]), 422, "truncated"),
    "one zero byte": (*_upload(b"\x00"), 422, "not an image"),
    "wider than 4096": (WIDE.getvalue(), "image/png", 413, "4096"),
    "bomb header": (_png_header_only(30000, 30000), "image/png", 413, "4096"),
    "bomb header 5000": (*_upload(_png_header_only(5000, 5000)), 413, "4096"),
    "multipart without file": (
        b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        422,
        "no file",
    ),
    "multipart without boundary": (b"junk", "multipart/form-data", 400, "multipart"),
    "plain text": (b"7", "text/plain", 415, "Unsupported Content-Type 'text/plain'"),
    "no content type": (b"7", "", 415, "Unsupported Content-Type"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_sentence(client, case):
    body, content_type, status, message = BAD_REQUESTS[case]
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post("/api/predict", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str)
    assert __import__("re").search(message, detail), detail
    assert client.get("/api/health").status_code == 200  # Still serving.


def test_blank_picture_is_empty(client):
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (250, 250, 250)).save(blank, format="PNG")
    answer = client.post("/api/predict", files={"file": ("blank.png", blank.getvalue(), "image/png")})
    assert answer.status_code == 422 and "empty" in answer.json()["detail"]


def test_oversized_body_by_content_length(client):
    answer = client.post(
        "/api/predict", content=b"\0" * (imaging.MAX_UPLOAD_BYTES + 100 * 1024), headers={"content-type": "image/png"}
    )
    assert answer.status_code == 413 and "5 MB" in answer.json()["detail"]


def test_oversized_body_without_content_length_is_stopped_while_reading(client):
    def chunks():  # A chunked upload declares no length; the server counts as it reads.
        for _ in range(8):
            yield b"\0" * (1024 * 1024)

    answer = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert answer.status_code == 413 and "5 MB" in answer.json()["detail"]


def test_oversized_file_in_multipart_under_the_body_limit(client):
    body, content_type = _upload(b"\0" * (imaging.MAX_UPLOAD_BYTES + 1))
    answer = client.post("/api/predict", content=body, headers={"content-type": content_type})
    assert answer.status_code == 413


def test_other_methods_and_paths(client):
    assert client.get("/api/predict").status_code == 405
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.json()["detail"] == "Nothing is at /api/nothing; /docs lists the API."


# --- A real server on loopback (conftest's live_server) ----------------------------------


def _post_with_urllib(url, body, content_type="image/png"):
    """POSTs as most clients do: urllib sends the whole body at once, with no `Expect: 100-continue`.
    A `bytes` body goes with its Content-Length, an iterator of chunks with `Transfer-Encoding: chunked`."""
    request = urllib.request.Request(url + "/api/predict", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _chunks(size, chunk=1024 * 1024):
    for start in range(0, size, chunk):
        yield b"\0" * min(chunk, size - start)


@pytest.mark.heavy
@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_real_server_answers_413_to_a_client_that_sends_6_mb_without_waiting(live_server, framing):
    """The body is read (and thrown away) before the answer, so the client gets the 413 and its sentence,
    not "connection reset by peer"; the next request on a new connection is served."""
    size = 6 * 1024 * 1024
    status, answer = _post_with_urllib(live_server, b"\0" * size if framing == "Content-Length" else _chunks(size))
    assert status == 413 and "5 MB" in answer["detail"], answer
    assert "Send a smaller picture" in answer["detail"]
    with urllib.request.urlopen(live_server + "/api/health", timeout=10) as health:
        assert health.status == 200


@pytest.mark.heavy
@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_real_server_closes_on_a_body_past_the_drain_limit(live_server, framing):
    """Past bodies.DRAIN_LIMIT_BYTES the server answers 413 and closes the connection without reading on:
    a client still sending sees the connection closed under it (broken pipe or reset), never a hang,
    and the server goes on serving."""
    size = bodies.DRAIN_LIMIT_BYTES + 8 * 1024 * 1024
    try:
        status, answer = _post_with_urllib(live_server, b"\0" * size if framing == "Content-Length" else _chunks(size))
    except urllib.error.URLError as error:
        assert isinstance(error.reason, (BrokenPipeError, ConnectionResetError)), error
    except (BrokenPipeError, ConnectionResetError):
        pass
    else:  # The 413 came back before the close (the kernel had taken the whole body).
        assert status == 413 and "5 MB" in answer["detail"], answer
    with urllib.request.urlopen(live_server + "/api/health", timeout=10) as health:
        assert health.status == 200


def _send_head_and_read_answer(live_server, head: bytes) -> str:
    port = int(live_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        received = b""
        while chunk := connection.recv(65536):  # The server answers, then closes.
            received += chunk
    return received.decode()


@pytest.mark.heavy
@pytest.mark.parametrize("declared, expect", [(6291456, b"Expect: 100-continue\r\n"), (64 * 1024 * 1024, b"")])
def test_real_server_refuses_a_declared_large_body_before_reading_it(live_server, declared, expect):
    """A client that waits for "100 Continue" (as curl does) gets the 413 before sending its 6 MB, and so
    does any client declaring more than bodies.DRAIN_LIMIT_BYTES; then the server closes."""
    answer = _send_head_and_read_answer(
        live_server,
        b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: image/png\r\nContent-Length: %d\r\n%s\r\n" % (declared, expect),
    )
    assert answer.startswith("HTTP/1.1 413") and "5 MB" in answer
    assert "100 Continue" not in answer and "connection: close" in answer.lower()


@pytest.mark.heavy
def test_short_load_test_on_loopback(live_server, load_script):
    """A small, bounded version of scripts/load_test.py: no errors under concurrency. (Speed targets
    are judged from the full script's figures in README, not by timing assertions here.)"""
    load_test = load_script("load_test")
    for payload in ("pixels", "png"):
        result = load_test.run_load_test(live_server, requests=300, concurrency=20, time_limit=20, payload=payload)
        assert result["errors"] == 0, result
        assert result["requests"] == 300 and result["statuses"] == {"200": 300}
        assert result["server_ms"]["p50"] > 0, result  # Every answer carried its server time.
        print(load_test.format_figures(result))


def test_load_test_refuses_other_hosts(load_script):
    load_test = load_script("load_test")
    with pytest.raises(ValueError, match="loopback"):
        load_test.run_load_test("http://192.0.2.1:8000", requests=1)
    with pytest.raises(ValueError, match="bounded"):
        load_test.run_load_test("http://127.0.0.1:8000", requests=10**7)
