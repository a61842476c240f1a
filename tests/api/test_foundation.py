"""Health, images, samples, models and the error model: whole bodies and problem+json for bad input."""

from __future__ import annotations

import io
import json
import platform
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from fastapi import APIRouter
from fastapi.testclient import TestClient
from PIL import Image

from app import __version__
from app.core.config import REPO_ROOT, Settings
from app.main import create_app
from tests.api.problems import assert_problem, problem
from tests.conftest import sample_bytes


def test_health(client: TestClient) -> None:
    assert client.get("/api/health").json() == {
        "status": "ok",
        "version": __version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "timm": timm.__version__},
        "default_model": "efficientnet_lite0",
        "default_model_loaded": True,
    }


def test_upload_then_read_back_the_decoded_image(client: TestClient, make_image: Callable[..., bytes]) -> None:
    data = make_image("RGBA", (30, 20), "PNG")
    created = client.post("/api/images", files={"file": ("a.png", data, "image/png")})
    assert created.status_code == 201
    body = created.json()
    assert len(body.pop("image_id")) == 32
    assert body == {"width": 30, "height": 20, "format": "PNG"}
    image_id = created.json()["image_id"]
    back = client.get(f"/api/images/{image_id}")
    assert back.headers["content-type"] == "image/png"
    decoded = Image.open(io.BytesIO(back.content))
    assert decoded.mode == "RGB" and decoded.size == (30, 20)
    assert np.array_equal(np.asarray(decoded), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_upload_errors(client: TestClient) -> None:
    assert_problem(client.post("/api/images", files={"file": ("t.txt", b"text")}), 415,
                   "t.txt is not an image this server can read; send JPEG, PNG, WebP, GIF, BMP or TIFF.")
    response = client.post("/api/images", data={"x": "1"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "file", "message": "Field required"}]
    assert_problem(client.get("/api/images/nope"), 404,
                   "no image 'nope': it was never uploaded or has left the cache; upload it again.")


def test_samples_are_listed_with_their_licences(client: TestClient) -> None:
    entries = json.loads((REPO_ROOT / "static/samples/samples.json").read_text())
    expected = [{k: e[k] for k in ("name", "title", "width", "height", "source", "license")}
                | {"url": f"/static/samples/{e['file']}"} for e in entries]
    assert client.get("/api/samples").json() == expected
    for sample in expected:
        image = client.get(sample["url"])
        assert image.status_code == 200
        assert Image.open(io.BytesIO(image.content)).size == (sample["width"], sample["height"])


def test_models_list_every_model_with_its_weights_status(client: TestClient, settings: Settings) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert list(models) == ["efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_small",
                            "efficientnet_b0", "vgg11", "alexnet"]
    assert models["efficientnet_lite0"] == {
        "name": "efficientnet_lite0", "title": "EfficientNet-Lite0", "family": "timm",
        "description": "Mobile EfficientNet without squeeze-excitation; ImageNet weights ship with pip (offline).",
        "weights": {"available": True, "source": "bundled", "file_name": "efficientnet-lite0-57934424.pth",
                    "detail": ""},
        "loaded": True, "num_classes": 1000, "input_size": [3, 224, 224], "num_params": 4_652_008,
        "preprocessing": {"resize_size": 256, "crop_size": 224, "interpolation": "bicubic",
                          "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    vgg = models["vgg11"]
    assert vgg["weights"] == {
        "available": False, "source": "missing", "file_name": "vgg11-8a719046.pth",
        "detail": f"weights not available: put vgg11-8a719046.pth in {settings.models_dir} (from "
                  "https://download.pytorch.org/models/vgg11-8a719046.pth) or set CONVSCOPE_ALLOW_DOWNLOADS=1 "
                  "on a machine with internet.",
    }
    assert (vgg["num_params"], vgg["num_classes"], vgg["loaded"]) == (132_863_336, 1000, False)
    assert client.get("/api/models/vgg11").json() == vgg
    assert_problem(client.get("/api/models/nope"), 404, models_detail("nope"))


def models_detail(name: str) -> str:
    return (f"unknown model {name!r}; choose one of: efficientnet_lite0, resnet18, resnet50, mobilenet_v3_small, "
            "efficientnet_b0, vgg11, alexnet.")


def test_model_input_is_the_resized_centre_crop(client: TestClient) -> None:
    response = client.get("/api/model-input", params={"sample": "cat", "model": "efficientnet_lite0"})
    assert response.headers["content-type"] == "image/png"
    view = Image.open(io.BytesIO(response.content))
    assert view.size == (224, 224)
    store = client.app.state.model_store  # type: ignore[attr-defined]
    expected = store.spec("efficientnet_lite0").preprocessing.view(Image.open(io.BytesIO(sample_bytes("cat"))))
    assert np.array_equal(np.asarray(view), np.asarray(expected))
    assert_problem(client.get("/api/model-input"), 422,
                   "give exactly one of image_id (from POST /api/images) and sample.")
    assert_problem(client.get("/api/model-input", params={"sample": "cat", "model": "nope"}), 404,
                   models_detail("nope"))


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert client.get("/api/nothing").json() == problem(404, "Not Found", "/api/nothing") | {"type": "about:blank"}
    response = client.delete("/api/health")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "GET"


@pytest.fixture(scope="module")
def small_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with tiny limits and a route that fails unexpectedly."""
    root: Path = tmp_path_factory.mktemp("small")
    app = create_app(Settings(data_dir=root, models_dir=root, max_upload_bytes=2000, max_pixels=10_000,
                              max_batch=2, dataset_max_zip_bytes=1000, preload=False))
    broken = APIRouter()

    @broken.get("/api/broken")
    def broken_route() -> None:
        raise RuntimeError("secret internals")

    app.include_router(broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_upload_limits(small_client: TestClient, make_image: Callable[..., bytes]) -> None:
    big = make_image("RGB", (200, 200), "BMP")
    assert_problem(small_client.post("/api/images", files={"file": ("big.bmp", big)}), 413,
                   f"big.bmp is {len(big)} bytes; the limit is 2000 bytes.")
    many = make_image("RGB", (120, 100), "PNG")  # small file, 12,000 pixels
    assert len(many) < 2000
    assert_problem(small_client.post("/api/images", files={"file": ("many.png", many)}), 413,
                   "many.png is 120x100 = 12,000 pixels; the limit is 10,000 pixels.")


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(small_client: TestClient) -> None:
    limit = 2000 * 2 + 1_000_000
    response = small_client.post("/api/images", content=b"x" * (limit + 1),
                                 headers={"content-type": "application/octet-stream"})
    assert_problem(response, 413, f"the request body is larger than the limit of {limit:,} bytes.")


def test_unexpected_errors_are_a_500_without_internals(small_client: TestClient) -> None:
    response = small_client.get("/api/broken")
    assert response.status_code == 500
    assert response.json() == problem(500, "Internal error: the server logged it.", "/api/broken",
                                      "internal-error")
    assert "secret" not in response.text


def test_openapi_documents_both_classify_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/api/classify"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert client.get("/docs").status_code == 200


def test_a_streamed_body_is_cut_off_at_the_limit(small_client: TestClient) -> None:
    limit = 2000 * 2 + 1_000_000
    chunks = iter([b"x" * 400_000] * 4)  # no Content-Length: sent chunked
    for path, content_type in (("/api/images", "multipart/form-data; boundary=xyz"),
                               ("/api/classify", "multipart/form-data; boundary=xyz"),
                               ("/api/classify", "application/json")):
        response = small_client.post(path, content=chunks, headers={"content-type": content_type})
        assert_problem(response, 413, f"the request body is larger than the limit of {limit:,} bytes.")
        chunks = iter([b"x" * 400_000] * 4)


def test_every_request_is_logged_with_its_status_and_duration(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="convscope.requests"):
        client.get("/api/health")
        client.get("/api/models/nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "convscope.requests"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /api/health -> 200 in ") and lines[0].endswith(" ms")
    assert lines[1].startswith("GET /api/models/nope -> 404 in ")


@pytest.mark.gpu
def test_cuda_gives_the_same_classes_as_the_cpu(tmp_path: Path) -> None:
    from app.services.classification import classify_images
    from app.services.model_store import ModelStore

    image = Image.open(io.BytesIO(sample_bytes("coffee"))).convert("RGB")
    results = {}
    for device in ("cpu", "cuda"):
        store = ModelStore(Settings(data_dir=tmp_path, models_dir=tmp_path, device=device))  # type: ignore[arg-type]
        assert store.get("efficientnet_lite0").device.type == device
        (result,) = classify_images(store, [image], "efficientnet_lite0", 5)
        results[device] = result.predictions
    assert [p.index for p in results["cpu"]] == [p.index for p in results["cuda"]]
    for a, b in zip(results["cpu"], results["cuda"], strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-3)


def test_the_body_limit_admits_a_full_batch_or_a_dataset_zip() -> None:
    assert Settings(max_upload_bytes=10, max_batch=3, dataset_max_zip_bytes=5).max_request_bytes == 1_000_030
    assert Settings(max_upload_bytes=10, max_batch=3, dataset_max_zip_bytes=5000).max_request_bytes == 1_005_000


def test_json_endpoints_answer_a_wrong_content_type_with_415(client: TestClient) -> None:
    response = client.post("/api/features", content='{"sample": "cat", "layer": "conv_stem"}',
                           headers={"content-type": "text/plain"})
    assert_problem(response, 415, "send the body as application/json, not text/plain.")
    response = client.post("/api/convolve/steps", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body", "message": "JSON decode error"}]


def test_validation_errors_name_fields_without_pydantic_internals(client: TestClient) -> None:
    layer = {"type": "conv", "preset": "sobel_x", "stride": 0}
    response = client.post("/api/convolve", json={"sample": "cat", "layers": [layer]})
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"layers.0.conv.stride"}
    response = client.post("/api/finetune", json={"dataset_id": "x", "lr": "NaN"})
    assert response.json()["errors"] == [{"field": "lr", "message": "Input should be a finite number"}]


def test_a_huge_bad_name_is_not_echoed_whole(client: TestClient) -> None:
    response = client.post("/api/classify", json={"sample": "x" * 200_000})
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail.startswith("unknown sample 'xxx") and detail.endswith("… (cut)")
    assert len(detail) < 8100
