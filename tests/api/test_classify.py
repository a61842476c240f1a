"""POST /api/classify in all its forms, with whole JSON bodies, and every bad input as problem+json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.cnn.classify import predict_proba, top_k
from tests.api.problems import assert_problem
from tests.conftest import SAMPLES, sample_bytes

TIMINGS = {"preprocess", "queue_and_forward", "total"}


def expected_predictions(client: TestClient, sample: str, k: int) -> list[dict[str, Any]]:
    """Computed here straight from the model, without the HTTP layer."""
    loaded = client.app.state.model_store.get("efficientnet_lite0")  # type: ignore[attr-defined]
    x = loaded.spec.preprocessing.to_tensor(Image.open(SAMPLES / f"{sample}.jpg").convert("RGB"))[None]
    (rows,) = top_k(predict_proba(loaded.module, x), loaded.spec.categories, k)
    return [{"index": p.index, "label": p.label, "probability": pytest.approx(p.probability, abs=1e-5)}
            for p in rows]


def test_classify_a_sample_by_json(client: TestClient) -> None:
    response = client.post("/api/classify", json={"sample": "coffee", "top_k": 3})
    assert response.status_code == 200
    body = response.json()
    assert set(body.pop("timings_ms")) == TIMINGS
    assert body == {"model": "efficientnet_lite0", "image": "coffee", "forward_batch": 1,
                    "predictions": expected_predictions(client, "coffee", 3)}
    assert body["predictions"][0]["label"] == "espresso"


def test_classify_an_uploaded_image_by_id(client: TestClient) -> None:
    created = client.post("/api/images", files={"file": ("cat.jpg", sample_bytes("cat"), "image/jpeg")})
    assert created.status_code == 201
    image_id = created.json()["image_id"]
    body = client.post("/api/classify", json={"image_id": image_id}).json()
    del body["timings_ms"]
    assert body == {"model": "efficientnet_lite0", "image": image_id, "forward_batch": 1,
                    "predictions": expected_predictions(client, "cat", 5)}
    assert body["predictions"][0]["label"] in {"tabby", "tiger cat", "Egyptian cat"}


def test_classify_a_multipart_upload(client: TestClient) -> None:
    response = client.post("/api/classify", files={"file": ("cat.jpg", sample_bytes("cat"), "image/jpeg")},
                           data={"top_k": "2", "model": "efficientnet_lite0"})
    body = response.json()
    assert set(body.pop("timings_ms")) == TIMINGS | {"decode"}
    assert body == {"model": "efficientnet_lite0", "image": "cat.jpg", "forward_batch": 1,
                    "predictions": expected_predictions(client, "cat", 2)}


def test_a_batch_is_one_forward_pass_with_the_same_answers(client: TestClient) -> None:
    files = [("files", (f"{n}.jpg", sample_bytes(n), "image/jpeg")) for n in ("cat", "coffee", "flower")]
    response = client.post("/api/classify", files=files, data={"top_k": "3"})
    assert response.status_code == 200
    body = response.json()
    assert [item["image"] for item in body] == ["cat.jpg", "coffee.jpg", "flower.jpg"]
    for item, name in zip(body, ("cat", "coffee", "flower"), strict=True):
        assert item["predictions"] == expected_predictions(client, name, 3)
    # one forward pass: every item carries the same batch timings
    assert {item["forward_batch"] for item in body} == {3}
    assert len({item["timings_ms"]["queue_and_forward"] for item in body}) == 1


def test_top_k_above_the_number_of_classes_is_clamped(client: TestClient) -> None:
    body = client.post("/api/classify", json={"sample": "cat", "top_k": 5000}).json()
    assert len(body["predictions"]) == 1000
    assert sum(p["probability"] for p in body["predictions"]) == pytest.approx(1.0, abs=1e-4)


def test_a_model_without_weights_is_refused_not_guessed(client: TestClient, settings: Any) -> None:
    response = client.post("/api/classify", json={"sample": "cat", "model": "resnet18"})
    assert_problem(
        response, 409,
        f"resnet18: weights not available: put resnet18-f37072fd.pth in {settings.models_dir} "
        "(from https://download.pytorch.org/models/resnet18-f37072fd.pth) or set CONVSCOPE_ALLOW_DOWNLOADS=1 "
        "on a machine with internet.",
        model="resnet18",
    )


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ({"sample": "cat", "model": "nope"}, 404,
         "unknown model 'nope'; choose one of: efficientnet_lite0, resnet18, resnet50, mobilenet_v3_small, "
         "efficientnet_b0, vgg11, alexnet."),
        ({"sample": "dog"}, 404, "unknown sample 'dog'; choose one of: cat, coffee, astronaut, rocket, china, flower."),
        ({"image_id": "0" * 32}, 404,
         f"no image {'0' * 32!r}: it was never uploaded or has left the cache; upload it again."),
        ({}, 422, "give exactly one of image_id (from POST /api/images) and sample."),
        ({"sample": "cat", "image_id": "x"}, 422, "give exactly one of image_id (from POST /api/images) and sample."),
        ({"sample": "cat", "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
        ({"sample": "cat", "top_k": "many"}, 422,
         "top_k: Input should be a valid integer, unable to parse string as an integer"),
        ([1, 2], 422, "request: Input should be a valid dictionary or instance of ClassifyRequest"),
    ],
)
def test_bad_json_requests(client: TestClient, payload: Any, status: int, detail: str) -> None:
    assert_problem(client.post("/api/classify", json=payload), status, detail)


def test_invalid_json_and_wrong_content_types(client: TestClient) -> None:
    response = client.post("/api/classify", content=b"{oops", headers={"content-type": "application/json"})
    assert_problem(response, 422, "the body is not valid JSON: Expecting property name enclosed in double quotes: "
                   "line 1 column 2 (char 1).")
    response = client.post("/api/classify", content=b"cat", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "send application/json or multipart/form-data, not text/plain.")
    assert_problem(client.post("/api/classify"), 415,
                   "send application/json or multipart/form-data, not no content type.")


def test_bad_multipart_requests(client: TestClient, make_image: Callable[..., bytes]) -> None:
    png = make_image()
    one_of = "send exactly one image as 'file', or one or more as 'files'."
    assert_problem(client.post("/api/classify", data={"model": "x"}, files={"other": ("a", b"1")}), 422, one_of)
    assert_problem(client.post("/api/classify", files=[("file", ("a.png", png)), ("files", ("b.png", png))]),
                   422, one_of)
    assert_problem(client.post("/api/classify", files=[("file", ("a.png", png)), ("file", ("b.png", png))]),
                   422, one_of)
    assert_problem(client.post("/api/classify", files={"file": ("a.png", png)}, data={"top_k": "lots"}), 422,
                   "top_k must be a whole number >= 1, got 'lots'.")
    assert_problem(client.post("/api/classify", files={"file": ("a.png", png)}, data={"top_k": "-2"}), 422,
                   "top_k must be >= 1, got -2.")
    assert_problem(client.post("/api/classify", files={"file": ("notes.txt", b"plain words")}), 415,
                   "notes.txt is not an image this server can read; send JPEG, PNG, WebP, GIF, BMP or TIFF.")
    assert_problem(client.post("/api/classify", files={"file": ("a.png", png)}, data={"model": "nope"}), 404,
                   client.post("/api/classify", json={"sample": "cat", "model": "nope"}).json()["detail"])


def test_a_batch_larger_than_the_limit_is_refused(client: TestClient, settings: Any,
                                                  make_image: Callable[..., bytes]) -> None:
    png = make_image("RGB", (8, 8))
    files = [("files", (f"{i}.png", png)) for i in range(settings.max_batch + 1)]
    response = client.post("/api/classify", files=files)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("the multipart body could not be read: Too many files.")


def test_classify_runs_on_the_default_model_without_grad(client: TestClient) -> None:
    loaded = client.app.state.model_store.get("efficientnet_lite0")  # type: ignore[attr-defined]
    assert not loaded.module.training
    assert torch.get_num_threads() >= 1
