"""``pspnet serve``: the HTTP API against the real app (Starlette's TestClient, a tiny CamVid-shaped model), malformed
multipart and truncated bodies (400, never 500), the queue's contracts (micro-batches, 503 when full, 504 for a
request that timed out, which frees its slot), SIGTERM draining a real server, and the page in a real headless
Chromium driven by Selenium."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the 'serve' extra is not installed: pip install 'pspnet[serve]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'test' extra)")

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from conftest import SHARED, tiny_pspnet

from pspnet.data.classes import DATASETS
from pspnet.segmenter import Segmenter
from pspnet.serve import SERVE_PACKAGES, require_serve
from pspnet.serve.app import ServeConfig, create_app
from pspnet.weights.model_file import make_card, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

CAMVID_VAL = SHARED / "data" / "camvid" / "val"
CAMVID = DATASETS["camvid"]
MAX_PIXELS = 250_000
MAX_BYTES = 100_000


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    model = tiny_pspnet(num_classes=len(CAMVID.classes))
    path = tmp_path_factory.mktemp("serve") / "camvid_tiny.safetensors"
    save_model(model, path, card=make_card(model.config, dataset="camvid", crop_size=(64, 64), base_size=64))
    return path


@pytest.fixture(scope="module")
def segmenter(model_file) -> Segmenter:
    return Segmenter.from_checkpoint(model_file, device="cpu", max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def client(segmenter):
    app = create_app(segmenter, ServeConfig(max_bytes=MAX_BYTES, batch=2, queue=4, timeout=20))
    with TestClient(app) as test_client:
        yield test_client


def photo(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(pixels: np.ndarray, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


# -- the API -------------------------------------------------------------------------------------------------------


def test_segment_answers_a_palette_png_of_class_ids_at_the_image_size(client, segmenter):
    pixels = photo()
    answer = client.post("/v1/segment", files={"image": ("x.png", encoded(pixels), "image/png")})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    mask = Image.open(io.BytesIO(answer.content))
    assert mask.mode == "P" and mask.size == (56, 40)
    assert mask.getpalette()[:6] == [v for colour in CAMVID.palette[:2] for v in colour]
    np.testing.assert_array_equal(np.asarray(mask), segmenter.predict(pixels))
    raw = client.post("/v1/segment", content=encoded(pixels), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.content == answer.content  # the raw body is the same image


def test_json_lists_the_classes_present_with_their_shares_and_the_mask(client, segmenter):
    pixels = photo(seed=1)
    answer = client.post("/v1/segment?format=json", content=encoded(pixels, "JPEG"))
    assert answer.status_code == 200
    body = answer.json()
    labels = segmenter.predict(np.asarray(Image.open(io.BytesIO(encoded(pixels, "JPEG"))).convert("RGB")))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"]))))
    np.testing.assert_array_equal(mask, labels)
    assert (body["width"], body["height"]) == (56, 40)
    shares = {entry["id"]: entry["share"] for entry in body["classes"]}
    assert shares == {int(c): float(np.mean(labels == c)) for c in np.unique(labels)}
    assert [e["share"] for e in body["classes"]] == sorted(shares.values(), reverse=True)
    assert all(
        e["name"] == CAMVID.classes[e["id"]] and e["color"] == list(CAMVID.palette[e["id"]]) for e in body["classes"]
    )


def test_overlay_is_a_jpeg_at_the_image_size(client):
    answer = client.post("/v1/segment?format=overlay&alpha=0.3", content=encoded(photo()))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (56, 40)


def test_protocol_options_change_the_inference(client, segmenter):
    pixels = photo(seed=2)
    answer = client.post("/v1/segment?mode=slide&scales=0.75,1.25&flip=true", content=encoded(pixels))
    assert answer.status_code == 200
    other = copy.copy(segmenter)
    other.settings = dataclasses.replace(segmenter.settings, mode="slide", scales=(0.75, 1.25), flip=True)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), other.predict(pixels))


@pytest.mark.parametrize(
    "query",
    [
        "format=gif",
        "mode=fast",
        "scales=abc",
        "scales=-1",
        "scales=",
        "scales=1,nan",
        "scales=" + ",".join(["1"] * 9),
        "flip=maybe",
        "alpha=2",
        "colour=red",
        "format=png&format=json",
        "scales=400",  # base size 64 x 400: images the pixel limit refuses
    ],
)
def test_bad_parameters_are_422(client, query):
    answer = client.post(f"/v1/segment?{query}", content=encoded(photo()))
    assert answer.status_code == 422, answer.text
    assert answer.json()["status"] == 422 and answer.json()["error"]


def test_limits_and_bad_images_answer_4xx_never_500(client):
    too_many_bytes = client.post("/v1/segment", content=b"\0" * (MAX_BYTES + 1))
    assert too_many_bytes.status_code == 413 and "bytes" in too_many_bytes.json()["error"]
    big = encoded(np.zeros((500, 600, 3), np.uint8))  # 300,000 pixels, a small file
    assert len(big) < MAX_BYTES
    too_many_pixels = client.post("/v1/segment", content=big)
    assert too_many_pixels.status_code == 413 and "pixels" in too_many_pixels.json()["error"]
    assert client.post("/v1/segment", content=b"hello, not an image").status_code == 415
    truncated = encoded(photo())[:200]
    assert client.post("/v1/segment", content=truncated).status_code == 415
    assert client.post("/v1/segment", content=b"").status_code == 422
    no_field = client.post("/v1/segment", files={"photo": ("x.png", encoded(photo()), "image/png")})
    assert no_field.status_code == 422 and "'image'" in no_field.json()["error"]
    text_field = client.post("/v1/segment", data={"image": "not a file"})
    assert text_field.status_code in (415, 422)
    malformed = client.post(
        "/v1/segment", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert malformed.status_code == 400 and malformed.json()["status"] == 400
    assert client.get("/v1/segment").status_code == 405
    for body in (b"\x89PNG\r\n\x1a\n" + b"\0" * 50, b"GIF89a" + b"\xff" * 30, b"BM" + b"\0" * 60, b"\xff\xd8\xff"):
        assert client.post("/v1/segment", content=body).status_code == 415


MULTIPART = "multipart/form-data; boundary=xyz"


def form_part(name: str = "image", data: bytes | None = None, *, filename: str | None = "x.png") -> bytes:
    """One part of a multipart/form-data body with the boundary ``xyz``, up to the CRLF before the next boundary."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    data = encoded(photo()) if data is None else data
    return f"--xyz\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n"


WELL_FORMED = form_part() + b"--xyz--\r\n"


@pytest.mark.parametrize(
    "content_type, body, status, words",
    [
        pytest.param(MULTIPART, WELL_FORMED, 200, None, id="well-formed"),
        pytest.param(MULTIPART, WELL_FORMED + b"an epilogue, which RFC 2046 allows", 200, None, id="epilogue"),
        pytest.param("multipart/form-data", WELL_FORMED, 400, "boundary", id="no-boundary"),
        pytest.param("multipart/form-data; boundary=", WELL_FORMED, 400, "boundary", id="empty-boundary"),
        pytest.param("multipart/form-data; boundary=" + "b" * 71, WELL_FORMED, 400, "70", id="long-boundary"),
        pytest.param("multipart/form-data; boundary=abc", WELL_FORMED, 400, "'--abc'", id="other-boundary"),
        pytest.param(MULTIPART, b"", 400, "closing boundary", id="empty-body"),
        pytest.param(MULTIPART, b"--x\r\nnonsense", 400, "'--xyz'", id="nonsense"),
        pytest.param(MULTIPART, WELL_FORMED[: len(WELL_FORMED) // 2], 400, "closing boundary", id="cut-in-data"),
        pytest.param(MULTIPART, form_part(), 400, "closing boundary", id="cut-after-a-part"),
        pytest.param(MULTIPART, WELL_FORMED[:40], 400, "closing boundary", id="cut-in-headers"),
        pytest.param(MULTIPART, WELL_FORMED[:-4], 400, "closing boundary", id="cut-in-closing-boundary"),
        pytest.param(
            MULTIPART,
            b"--xyz\r\nno header here\r\n\r\n" + encoded(photo()) + b"\r\n--xyz--\r\n",
            400,
            "malformed",
            id="bad-header-line",
        ),
        pytest.param(
            MULTIPART, b"--xyz\r\nContent-Type: image/png\r\n\r\nabc\r\n--xyz--\r\n", 400, "name", id="no-disposition"
        ),
        pytest.param(
            MULTIPART,
            b"".join(form_part(f"f{i}", b"x") for i in range(17)) + b"--xyz--\r\n",
            400,
            "more than 16 parts",
            id="too-many-parts",
        ),
        pytest.param(MULTIPART, b"--xyz--\r\n", 422, "no field 'image'", id="no-parts"),
        pytest.param(MULTIPART, form_part("photo") + b"--xyz--\r\n", 422, "no field 'image'", id="no-image-field"),
        pytest.param(MULTIPART, form_part() + form_part() + b"--xyz--\r\n", 422, "more than once", id="two-images"),
        pytest.param(
            MULTIPART,
            form_part(data=b"a text field", filename=None) + b"--xyz--\r\n",
            422,
            "must be a file",
            id="text-field",
        ),
        pytest.param(MULTIPART, form_part(data=b"") + b"--xyz--\r\n", 422, "no image", id="empty-file"),
    ],
)
def test_multipart_bodies_malformed_are_400_and_without_an_image_422(client, content_type, body, status, words):
    answer = client.post("/v1/segment", content=body, headers={"content-type": content_type})
    assert answer.status_code == status, answer.text
    if words is None:
        assert answer.headers["content-type"] == "image/png"
    else:
        assert answer.json()["status"] == status and words in answer.json()["error"]


async def call_app(app, body_chunks: list[bytes], headers: dict[str, str], *, complete: bool) -> list[dict]:
    """The ASGI messages ``app`` sends for ``POST /v1/segment`` whose body arrives as ``body_chunks``: the last one
    says it ends the body (``complete``), or more is announced and then the client is gone (``http.disconnect``), as
    uvicorn reports a connection closed before its body ended."""
    chunks = list(body_chunks)
    sent: list[dict] = []

    async def receive() -> dict:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks) or not complete}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/segment",
        "raw_path": b"/v1/segment",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return sent


def test_a_body_that_ends_before_its_content_length_is_400(client):
    app, body = client.app, encoded(photo())
    headers = {"content-type": "image/png", "content-length": str(len(body))}
    # the connection closes after half the body (uvicorn then says http.disconnect)...
    closed = asyncio.run(call_app(app, [body[:100], body[100 : len(body) // 2]], headers, complete=False))
    # ...or the server hands over a complete body shorter than its Content-Length
    short = asyncio.run(call_app(app, [body[:-10]], headers, complete=True))
    for sent, words in ((closed, "closed"), (short, "Content-Length")):
        start = next(m for m in sent if m["type"] == "http.response.start")
        answer = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
        assert start["status"] == 400 and answer["status"] == 400 and words in answer["error"], answer
        assert str(len(body)) in answer["error"]


def test_model_info_healthz_and_page(client):
    info = client.get("/v1/model").json()
    assert info["classes"] == list(CAMVID.classes)
    assert info["palette"] == [list(c) for c in CAMVID.palette]
    assert info["normalization"]["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert info["normalization"]["std"] == pytest.approx([58.395, 57.12, 57.375])
    assert info["architecture"]["depth"] == 18 and info["limits"]["max_pixels"] == MAX_PIXELS
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/page.js" in page.text
    assert client.get("/page.js").status_code == 200 and client.get("/page.css").status_code == 200


def test_metrics_in_prometheus_text_format(client):
    client.post("/v1/segment", content=encoded(photo()))
    client.post("/v1/segment", content=b"junk")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert "# TYPE pspnet_http_requests_total counter" in text
    assert 'pspnet_http_requests_total{path="/v1/segment",status="200"}' in text
    assert 'pspnet_http_requests_total{path="/v1/segment",status="415"}' in text
    assert "# TYPE pspnet_http_request_duration_seconds histogram" in text
    assert 'pspnet_http_request_duration_seconds_bucket{le="+Inf",path="/v1/segment"}' in text
    assert "pspnet_queue_depth 0.0" in text
    rate = float(next(line for line in text.splitlines() if line.startswith("pspnet_images_per_second ")).split()[1])
    assert rate > 0
    assert "pspnet_images_total" in text


def test_require_serve_says_how_to_install(monkeypatch):
    require_serve()
    monkeypatch.setitem(SERVE_PACKAGES, "no_such_module_for_pspnet", "no-such-package")
    with pytest.raises(ValueError, match=r"pip install 'pspnet\[serve\]'") as error:
        require_serve()
    assert "no-such-package" in str(error.value)


# -- the queue -----------------------------------------------------------------------------------------------------


class BlockingSegmenter:
    """A stand-in for Segmenter whose batches wait for ``release`` and are recorded (sizes)."""

    def __init__(self, real: Segmenter):
        self.settings, self.card, self.classes, self.palette = real.settings, real.card, real.classes, real.palette
        self.release = threading.Event()
        self.batches: list[int] = []

    def predict_batch(self, images, *, max_batch=None):
        assert self.release.wait(20)
        self.batches.append(len(images))
        return [np.zeros(image.shape[:2], np.uint8) for image in images]


def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def background_post(client, body: bytes, answers: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(client.post("/v1/segment", content=body)))
    thread.start()
    return thread


def test_full_queue_is_503_with_retry_after_and_equal_sizes_share_a_batch(segmenter):
    fake = BlockingSegmenter(segmenter)
    app = create_app(fake, ServeConfig(batch=4, queue=3, timeout=20))
    worker = app.state.worker
    with TestClient(app) as client:
        answers: list = []
        threads = [background_post(client, encoded(photo()), answers)]
        wait_until(lambda: worker.busy)  # the first image is in the worker, blocked
        for k, size in enumerate([(40, 56), (32, 32), (40, 56)]):
            threads.append(background_post(client, encoded(photo(*size)), answers))
            wait_until(lambda k=k: worker.depth == k + 1)
        full = client.post("/v1/segment", content=encoded(photo()))
        assert full.status_code == 503 and full.headers["retry-after"] == "1" and "busy" in full.json()["error"]
        assert "pspnet_queue_depth 3.0" in client.get("/metrics").text
        fake.release.set()
        for thread in threads:
            thread.join(20)
        assert [a.status_code for a in answers] == [200] * 4
        assert fake.batches == [1, 2, 1]  # the two 40x56 images in one batch, the 32x32 one alone


def test_a_request_that_times_out_is_504_and_frees_its_slot(segmenter):
    fake = BlockingSegmenter(segmenter)
    app = create_app(fake, ServeConfig(batch=1, queue=1, timeout=0.5))
    worker = app.state.worker
    with TestClient(app) as client:
        answers: list = []
        first = background_post(client, encoded(photo()), answers)
        wait_until(lambda: worker.busy)
        late = client.post("/v1/segment", content=encoded(photo()))  # queued, then gives up after 0.5 s
        assert late.status_code == 504 and late.json() == {
            "error": "no answer within 0.5 s (the server's --timeout); the image waited in the queue and was not "
            "computed",
            "status": 504,
        }
        assert worker.depth == 0  # its slot is free again...
        again = client.post("/v1/segment", content=encoded(photo()))
        assert again.status_code == 504  # ...so the next one is queued (and times out), not refused as full (503)
        first.join(20)
        assert answers[0].status_code == 504  # the one in the worker timed out too
        assert "was being computed" in answers[0].json()["error"]
        assert 'pspnet_http_requests_total{path="/v1/segment",status="504"} 3.0' in client.get("/metrics").text
        fake.release.set()
        wait_until(lambda: not worker.busy and worker.depth == 0)
        fake.release.clear()
        threading.Timer(0.1, fake.release.set).start()
        assert client.post("/v1/segment", content=encoded(photo())).status_code == 200
        assert fake.batches == [1, 1]  # the abandoned queued images were never computed


# -- a real server -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sigterm_drains_the_queue_and_exits(model_file):
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "pspnet.cli", "serve", str(model_file), "--port", str(port), "--batch", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            time.sleep(0.1)
        body = encoded(photo(360, 480))
        answers: list = []

        def post() -> None:
            answers.append(httpx.post(f"{base}/v1/segment", content=body, timeout=60).status_code)

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_until(lambda: "pspnet_queue_depth 0.0" not in httpx.get(f"{base}/metrics").text, 30)
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        # uvicorn ends the process by the signal it handled, as a shell expects (exit status 143)
        assert server.wait(60) in (0, -signal.SIGTERM)
        assert answers == [200] * 4  # every queued image was answered before the server exited
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_real_server_answers_400_to_a_body_cut_short(segmenter):
    """uvicorn, not the TestClient: a client sends half the body its Content-Length announces and closes its side.
    The answer cannot reach it, but the server counts a 400 (the request was incomplete), not a 500."""
    import httpx
    import uvicorn

    app = create_app(segmenter, ServeConfig(max_bytes=MAX_BYTES))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 20)
        body = encoded(photo())
        for content_type, data in (("image/png", body), (MULTIPART, WELL_FORMED)):
            head = f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            with socket.create_connection(("127.0.0.1", port)) as connection:
                connection.sendall(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data[: len(data) // 2])
                connection.shutdown(socket.SHUT_WR)
                connection.settimeout(20)
                while connection.recv(65536):  # until the server closes the connection
                    pass
        counted = 'pspnet_http_requests_total{path="/v1/segment",status="400"} 2.0'
        wait_until(lambda: counted in httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        assert 'status="500"' not in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.should_exit = True
        thread.join(30)


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not CHROMIUM or not CHROMEDRIVER, reason="needs Debian's chromium and chromium-driver packages")
@pytest.mark.skipif(not CAMVID_VAL.is_dir(), reason="needs the shared CamVid copy (../shared/data/camvid/val)")
def test_the_page_in_a_headless_browser(segmenter):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the 'test' extra)")
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(segmenter, ServeConfig())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,760",
    ):
        options.add_argument(flag)
    from selenium.common.exceptions import WebDriverException

    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except WebDriverException as error:  # installed but cannot start here (missing libraries, no /dev/shm, ...)
        server.should_exit = True
        thread.join(30)
        pytest.skip(f"chromium does not start here: {error.msg}")
    try:
        wait_until(lambda: server.started, 20)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20).until(lambda d: "classes" in d.find_element(By.ID, "model-name").text)
        image = min(CAMVID_VAL.glob("*.png"))
        driver.find_element(By.ID, "file").send_keys(str(image))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "result").get_attribute("data-ready"))
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return document.getElementById('mask').naturalWidth") == 480
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "#legend tr.legend-entry")
        names = [row.find_element(By.CSS_SELECTOR, "td.name").text for row in rows]
        shares = [float(row.find_element(By.CSS_SELECTOR, "td.share").text.rstrip("%")) for row in rows]
        assert names and set(names) <= set(CAMVID.classes)
        assert sum(shares) == pytest.approx(100, abs=0.1 * len(shares))
        assert shares == sorted(shares, reverse=True)
        driver.find_element(By.ID, "opacity").send_keys("\ue012")  # arrow left: the slider moves the mask's opacity
        assert float(driver.execute_script("return document.getElementById('mask').style.opacity")) < 0.6
        assert driver.find_element(By.ID, "download").get_attribute("href").startswith("data:image/png;base64,")
        if os.environ.get("PSPNET_SERVE_SCREENSHOT"):  # the README's picture: make docs-screenshot
            driver.save_screenshot(os.environ["PSPNET_SERVE_SCREENSHOT"])
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(30)
