"""POST /api/convolve, POST /api/convolve/steps, GET /api/convolve/presets: whole bodies and every refusal."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from PIL import Image

from app.cnn.conv import PRESETS
from app.core.config import Settings
from app.main import create_app
from tests.conftest import encode

CLASSIC = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
PIXELS = np.array(  # (H=2, W=3, RGB)
    [[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[100, 110, 120], [130, 140, 150], [160, 170, 180]]],
    dtype=np.uint8,
)


def decode_data_url(url: str) -> np.ndarray:
    header, data = url.split(",", 1)
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def problem(response, field: str | None = None) -> dict:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "instance"}
    if field is not None:
        assert field in body["detail"], body["detail"]
    return body


def post_form(client: TestClient, png: bytes, spec: dict) -> Response:
    return client.post("/api/convolve", files={"file": ("t.png", png)}, data={"spec": json.dumps(spec)})


@pytest.fixture(scope="module")
def tiny_png() -> bytes:
    return encode(Image.fromarray(PIXELS, "RGB"))


def test_multipart_upload_whole_body(client: TestClient, tiny_png: bytes) -> None:
    spec = {"layers": [{"type": "conv", "kernel": [[1, -1]], "bias": 5}], "render": {"mode": "clip"}}
    response = client.post("/api/convolve", files={"file": ("tiny.png", tiny_png, "image/png")},
                           data={"spec": json.dumps(spec)})
    assert response.status_code == 200, response.text
    body = response.json()
    image = body["layers"][0].pop("image")
    assert set(body["timings_ms"]) == {"prepare", "queue", "compute", "render", "encode", "total"}
    del body["timings_ms"]
    # every channel's horizontal difference is -30 on this ramp, plus the bias: -25 everywhere
    assert body == {
        "input_shape": [3, 2, 3],
        "layers": [{
            "index": 0,
            "type": "conv",
            "output_shape": [3, 2, 2],
            "formula": "H: floor((2 + 2×0 − 1×(1 − 1) − 1) / 1) + 1 = 2; "
                       "W: floor((3 + 2×0 − 1×(2 − 1) − 1) / 1) + 1 = 2",
            "stats": {"min": -25.0, "max": -25.0, "mean": -25.0, "std": 0.0},
            "image_size": [2, 2],
            "values": [[[-25.0, -25.0], [-25.0, -25.0]]] * 3,
        }],
    }
    assert decode_data_url(image).tolist() == [[[0, 0, 0]] * 2] * 2  # clipped to 0


def test_json_and_multipart_agree(client: TestClient, tiny_png: bytes) -> None:
    created = client.post("/api/images", files={"file": ("tiny.png", tiny_png, "image/png")}).json()
    spec = {"grayscale": True, "layers": [{"type": "conv", "preset": "sobel_x", "padding": "same",
                                           "padding_mode": "replicate"}], "render": {"mode": "minmax"}}
    by_json = client.post("/api/convolve", json={"image_id": created["image_id"], **spec}).json()
    by_form = client.post("/api/convolve", files={"file": ("t.png", tiny_png, "image/png")},
                          data={"spec": json.dumps(spec)}).json()
    for body in (by_json, by_form):
        del body["timings_ms"]
    assert by_json == by_form
    layer = by_json["layers"][0]
    assert layer["output_shape"] == [1, 2, 3]
    # luma of the ramp grows by 30 a column: Sobel x with replicated edges gives 4×30 inside, 4×30/2 at edges
    np.testing.assert_allclose(layer["values"][0], [[120, 240, 120], [120, 240, 120]], atol=1e-3)
    assert decode_data_url(layer["image"]).tolist() == [[0, 255, 0], [0, 255, 0]]


def test_stride_two_halves_the_size_and_says_why(client: TestClient) -> None:
    layers = [{"type": "conv", "preset": "gaussian_3", "padding": 1, "stride": 2},
              {"type": "activation", "fn": "tanh"},
              {"type": "pool", "mode": "max", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
              {"type": "pool", "mode": "global_avg"}]
    body = client.post("/api/convolve", json={"sample": "astronaut", "layers": layers}).json()
    assert body["input_shape"] == [3, 512, 512]
    assert [layer["output_shape"] for layer in body["layers"]] == [[3, 256, 256], [3, 256, 256],
                                                                   [3, 129, 129], [3, 1, 1]]
    assert body["layers"][0]["formula"] == ("H: floor((512 + 2×1 − 1×(3 − 1) − 1) / 2) + 1 = 256; "
                                            "W: floor((512 + 2×1 − 1×(3 − 1) − 1) / 2) + 1 = 256")
    assert body["layers"][2]["formula"].startswith("H: ceil((256 + 2×1 − 1×(3 − 1) − 1) / 2) + 1 = 129")
    assert body["layers"][1]["stats"]["max"] <= 1.0  # tanh
    assert body["layers"][0]["values"] is None and len(body["layers"][3]["values"]) == 3
    assert body["layers"][0]["image"].startswith("data:image/png;base64,")  # 256²: still PNG
    big = client.post("/api/convolve", json={"sample": "astronaut", "layers": layers[1:2]}).json()
    assert big["layers"][0]["image"].startswith("data:image/jpeg;base64,")  # 512²: JPEG, measured faster


def test_max_side_scales_the_photo_down(client: TestClient) -> None:
    body = client.post("/api/convolve", json={"sample": "coffee", "max_side": 60,
                                              "layers": [{"type": "activation", "fn": "abs"}]}).json()
    assert body["input_shape"] == [3, 40, 60]
    assert len(body["layers"][0]["values"][0]) == 40


def test_depth_kernel_and_bank(client: TestClient, tiny_png: bytes) -> None:
    depth = [[[1.0]], [[0.0]], [[-1.0]]]  # red minus blue, summed into one map
    bank = [depth, [[[1.0]], [[1.0]], [[1.0]]]]
    spec = {"layers": [{"type": "conv", "kernel": depth}, {"type": "conv", "kernel": [[[2.0]]]}]}
    body = post_form(client, tiny_png, spec).json()
    assert [layer["output_shape"] for layer in body["layers"]] == [[1, 2, 3], [1, 2, 3]]
    assert body["layers"][1]["values"] == [[[-40.0] * 3] * 2]
    spec = {"layers": [{"type": "conv", "kernel": bank, "bias": [0, 1]}], "render": {"mode": "diverging"}}
    body = post_form(client, tiny_png, spec).json()
    layer = body["layers"][0]
    assert layer["output_shape"] == [2, 2, 3]
    assert layer["values"][1][0] == [61.0, 151.0, 241.0]
    assert layer["image_size"] == [3 * 2 + 2, 2]  # two tiles side by side


def test_steps_conv_whole_body(client: TestClient) -> None:
    response = client.post("/api/convolve/steps", json={
        "input": [[1, 2], [3, 4]],
        "layer": {"type": "conv", "kernel": [[1, 2], [3, 4]], "bias": 1, "padding": 0}})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "output": [[31.0]],
        "output_shape": [1, 1],
        "formula": "H: floor((2 + 2×0 − 1×(2 − 1) − 1) / 1) + 1 = 1; "
                   "W: floor((2 + 2×0 − 1×(2 − 1) − 1) / 1) + 1 = 1",
        "padded": [[1.0, 2.0], [3.0, 4.0]],
        "is_padding": [[False, False], [False, False]],
        "padding": {"top": 0, "bottom": 0, "left": 0, "right": 0},
        "kernel": [[1.0, 2.0], [3.0, 4.0]],
        "steps": [{"row": 0, "col": 0, "rows": [0, 1], "cols": [0, 1], "window": [[1.0, 2.0], [3.0, 4.0]],
                   "is_padding": [[False, False], [False, False]], "value": 31.0,
                   "products": [[1.0, 4.0], [9.0, 16.0]], "sum": 30.0, "bias": 1.0, "argmax": None,
                   "count": None}],
    }


def test_steps_pool_marks_padding_and_ignores_it(client: TestClient) -> None:
    body = client.post("/api/convolve/steps", json={
        "input": [[-1, -2], [-3, -4]],
        "layer": {"type": "pool", "mode": "max", "kernel_size": 2, "padding": 1}}).json()
    assert body["output"] == [[-1.0, -2.0], [-3.0, -4.0]]  # padding never wins, even against negatives
    assert body["padded"] == [[None] * 4, [None, -1.0, -2.0, None], [None, -3.0, -4.0, None], [None] * 4]
    first = body["steps"][0]
    assert first["window"] == [[None, None], [None, -1.0]] and first["argmax"] == [1, 1]
    assert first["is_padding"] == [[True, True], [True, False]]


def test_steps_classic_example(client: TestClient) -> None:
    layer = {"type": "pool", "kernel_size": 3, "stride": 1}
    body = client.post("/api/convolve/steps", json={"input": CLASSIC, "layer": layer}).json()
    assert body["output"] == [[3, 3, 3], [3, 3, 3], [3, 2, 3]]
    assert len(body["steps"]) == 9


def test_presets_listing(client: TestClient) -> None:
    body = client.get("/api/convolve/presets").json()
    assert [p["name"] for p in body] == list(PRESETS)
    sobel = next(p for p in body if p["name"] == "sobel_x")
    assert sobel == {"name": "sobel_x", "kernel": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
                     "description": "Horizontal gradient: finds vertical edges, with smoothing across rows."}


# --- refusals ------------------------------------------------------------------------------------------


def conv(**fields: object) -> dict:
    return {"sample": "cat", "max_side": 60, "layers": [{"type": "conv", **fields}]}  # 60×40


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (conv(kernel=[[1, 2], [3]]), "layers[0].kernel", "ragged"),
        (conv(kernel=[[]]), "layers[0].kernel", "empty"),
        (conv(kernel=[]), "layers[0].kernel", "depth 1"),
        (conv(kernel=[[1, "x"]]), "layers.0.conv.kernel", "valid number"),
        (conv(kernel=[[0] * 32]), "layers.0.conv.kernel", "at most 31"),
        (conv(preset="blurry"), "layers[0].preset", "choose one of: identity"),
        (conv(), "layers[0]", "exactly one of kernel and preset"),
        (conv(preset="identity", kernel=[[1]]), "layers[0]", "exactly one of kernel and preset"),
        (conv(preset="identity", stride=17), "layers.0.conv.stride", "less than or equal to 16"),
        (conv(preset="identity", stride=0), "layers.0.conv.stride", "greater than or equal to 1"),
        (conv(preset="identity", dilation=9), "layers.0.conv.dilation", "less than or equal to 8"),
        (conv(preset="identity", padding="half"), "layers.0.conv.padding", "'valid', 'same' or 'full'"),
        (conv(kernel=[[1.0] * 31] * 31, dilation=8), "layers[0].kernel", "spans 241×241"),
        (conv(preset="identity", padding=64, padding_mode="reflect"), "layers[0].padding", "smaller than"),
        (conv(kernel=[[[1.0]]] * 2), "layers[0].kernel", "2 slices deep but its input has 3 channels"),
        (conv(kernel=[[[[1.0]]] * 3] * 2, bias=[1, 2, 3]), "layers[0].bias", "one per filter (2)"),
        ({"sample": "cat", "layers": [{"type": "pool", "kernel_size": 2, "padding": 2}]}, "layers[0].padding",
         "at most half"),
        ({"sample": "cat", "layers": [{"type": "pool", "mode": "median"}]}, "layers.0.pool.mode", "'max'"),
        ({"sample": "cat", "layers": [{"type": "dropout"}]}, "layers.0", "'conv', 'activation', 'pool'"),
        ({"sample": "cat", "layers": []}, "layers", "at least 1"),
        ({"sample": "cat", "layers": [{"type": "activation"}] * 13}, "layers", "the limit is 12"),
        ({"sample": "cat", "max_side": 4096, "layers": [{"type": "activation"}]}, "max_side", "16-2048"),
        ({"layers": [{"type": "activation"}]}, "image_id", "exactly one of image_id"),
        ({"sample": "cat", "layers": [{"type": "conv", "kernel": [[1e6] * 31] * 31}] * 8}, "layers[",
         "overflowed"),
    ],
)
def test_bad_pipelines_are_422_naming_the_field(client: TestClient, body: dict, field: str,
                                                words: str) -> None:
    detail = problem(client.post("/api/convolve", json=body), field)["detail"]
    assert words in detail


def test_nan_and_infinity_are_refused(client: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        raw = f'{{"sample": "cat", "layers": [{{"type": "conv", "kernel": [[1, {literal}]]}}]}}'
        response = client.post("/api/convolve", content=raw, headers={"content-type": "application/json"})
        assert "NaN or infinity" in problem(response, "layers[0].kernel")["detail"]
    raw = '{"input": [[1, NaN]], "layer": {"type": "activation"}}'
    response = client.post("/api/convolve/steps", content=raw, headers={"content-type": "application/json"})
    assert "no NaN or infinity" in problem(response, "input")["detail"]


def test_output_over_the_pixel_limit_is_refused(settings: Settings) -> None:
    small = settings.model_copy(update={"convolve_max_values": 100_000, "preload": False})
    with TestClient(create_app(small)) as client:
        body = {"sample": "cat", "layers": [{"type": "conv", "preset": "identity"}]}
        detail = problem(client.post("/api/convolve", json=body), "layers[0]")["detail"]
        assert "3×298×449 = 401,406 values; the limit is 100,000" in detail
    slow = settings.model_copy(update={"convolve_max_multiply_adds": 10**8, "preload": False})
    with TestClient(create_app(slow)) as client:
        body = {"sample": "cat", "layers": [{"type": "conv", "kernel": [[1.0] * 31] * 31, "padding": "same"}]}
        detail = problem(client.post("/api/convolve", json=body), "layers[0]")["detail"]
        assert "390,069,900 multiply-adds; the limit is 100,000,000" in detail  # 3·300·451·961


def test_malformed_bodies(client: TestClient, tiny_png: bytes) -> None:
    assert "not valid JSON" in problem(client.post("/api/convolve", content=b"{", headers={
        "content-type": "application/json"}))["detail"]
    response = client.post("/api/convolve", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "'spec'" in problem(client.post("/api/convolve", files={"file": ("t.png", tiny_png)}))["detail"]
    no_file = client.post("/api/convolve", files={"other": ("t.png", tiny_png)}, data={"spec": "{}"})
    assert "'file'" in problem(no_file)["detail"]
    bad_spec = client.post("/api/convolve", files={"file": ("t.png", tiny_png)}, data={"spec": "[1"})
    assert "spec is not valid JSON" in problem(bad_spec)["detail"]
    image_in_spec = post_form(client, tiny_png, {"sample": "cat", "layers": [{"type": "activation"}]})
    assert "sample" in problem(image_in_spec)["detail"]
    not_image = client.post("/api/convolve", files={"file": ("t.png", b"hello")},
                            data={"spec": json.dumps({"layers": [{"type": "activation"}]})})
    assert not_image.status_code == 415
    unknown = client.post("/api/convolve", json={"sample": "dog", "layers": [{"type": "activation"}]})
    assert unknown.status_code == 404 and "unknown sample 'dog'" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"input": [[1] * 33], "layer": {"type": "activation"}}, "input", "at most 32"),
        ({"input": [[1, 2], [3]], "layer": {"type": "activation"}}, "input", "rectangular"),
        ({"input": [], "layer": {"type": "activation"}}, "input", "at least 1 item"),
        ({"input": [[1]], "layer": {"type": "conv", "kernel": [[[1.0]]]}}, "layer.kernel",
         "must be a 2-D matrix"),
        ({"input": [[1] * 3] * 3, "layer": {"type": "conv", "kernel": [[1] * 4] * 4}}, "layer.kernel",
         "padded input is only 3×3"),
        ({"input": [[1] * 32] * 32, "layer": {"type": "conv", "kernel": [[1] * 31] * 31, "padding": "full"}},
         "layer", "the limit is 65,536"),
        ({"input": [[1]], "layer": {"type": "conv", "preset": "nope"}}, "layer.preset", "unknown preset"),
    ],
)
def test_bad_steps_requests(client: TestClient, body: dict, field: str, words: str) -> None:
    detail = problem(client.post("/api/convolve/steps", json=body), field)["detail"]
    assert words in detail


@pytest.fixture
def openapi(client: TestClient) -> Iterator[dict]:
    yield client.get("/openapi.json").json()


def test_openapi_documents_both_request_forms(openapi: dict) -> None:
    content = openapi["paths"]["/api/convolve"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert "$defs" not in json.dumps(content)  # inlined: every reference resolves
    assert "/api/convolve/steps" in openapi["paths"] and "/api/convolve/presets" in openapi["paths"]
