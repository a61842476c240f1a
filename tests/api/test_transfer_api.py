"""Transfer learning over HTTP: datasets, jobs with SSE, the registered model in classify, exports, errors."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.services.registry import Registry
from tests.api.problems import assert_problem_says
from tests.services.test_datasets import make_zip


def wait_for(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/finetune/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def faces(client: TestClient) -> dict[str, Any]:
    response = client.post("/api/datasets/demo", json={"name": "faces", "per_class": 4})
    assert response.status_code == 201
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def trained(client: TestClient, faces: dict[str, Any]) -> dict[str, Any]:
    """A feature-extractor job on 8 faces, followed over SSE to the end."""
    response = client.post(
        "/api/finetune", json={"dataset_id": faces["dataset_id"], "epochs": 2, "seed": 1, "name": "faces-fe"}
    )
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.json() == {"job_id": job_id, "status": "queued"}
    events = []
    with client.stream("GET", f"/api/finetune/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return {"job_id": job_id, "events": events}


# --- datasets -----------------------------------------------------------------------------------


def test_demo_dataset_body(faces: dict[str, Any]) -> None:
    dataset_id = faces["dataset_id"]
    assert faces == {
        "dataset_id": dataset_id,
        "name": "demo: faces",
        "source": "demo:faces",
        "created": faces["created"],
        "num_images": 8,
        "classes": [
            {
                "name": "face",
                "count": 4,
                "thumbnails": [f"/api/datasets/{dataset_id}/images/{i}" for i in range(4)],
            },
            {
                "name": "not_face",
                "count": 4,
                "thumbnails": [f"/api/datasets/{dataset_id}/images/{i}" for i in range(4, 8)],
            },
        ],
        "skipped": [],
    }


def test_upload_list_thumbnail_delete(client: TestClient, make_image: Callable[..., bytes]) -> None:
    png = make_image("RGB", (200, 100), "PNG")
    data = make_zip(
        {
            "shapes/round/1.png": png,
            "shapes/round/2.png": png,
            "shapes/square/3.png": png,
            "shapes/square/4.png": png,
            "shapes/square/readme.txt": b"hi",
        }
    )
    response = client.post("/api/datasets", files={"file": ("shapes.zip", data, "application/zip")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "shapes" and body["source"] == "upload" and body["num_images"] == 4
    assert [(c["name"], c["count"]) for c in body["classes"]] == [("round", 2), ("square", 2)]
    assert body["skipped"][0]["file"] == "shapes/square/readme.txt"
    dataset_id = body["dataset_id"]
    assert client.get(f"/api/datasets/{dataset_id}").json() == body
    assert dataset_id in [d["dataset_id"] for d in client.get("/api/datasets").json()]
    thumb = client.get(f"/api/datasets/{dataset_id}/images/0")
    assert thumb.headers["content-type"] == "image/png"
    from PIL import Image

    assert Image.open(io.BytesIO(thumb.content)).size == (96, 48)
    assert_problem_says(client.get(f"/api/datasets/{dataset_id}/images/4"), 404, "images 0..3, not 4")
    assert client.delete(f"/api/datasets/{dataset_id}").status_code == 204
    assert_problem_says(client.get(f"/api/datasets/{dataset_id}"), 404, "unknown dataset")
    assert_problem_says(client.delete(f"/api/datasets/{dataset_id}"), 404)


@pytest.mark.parametrize(
    ("entries", "status", "fragment"),
    [
        ({"../evil.png": "png", "a/1.png": "png"}, 422, "zip-slip"),
        ({"a/1.png": "png", "a/2.png": "png"}, 422, "at least 2 class folders"),
        ({"a/1.png": "png", "a/2.png": "png", "b/": ""}, 422, "too few in: b (0)"),
        (
            {"a/1.png": "png", "a/2.png": "png", "b/1.png": "png", "b/big.png": "bomb"},
            413,
            "compression ratio",
        ),
    ],
)
def test_bad_zips_are_refused_and_nothing_is_stored(
    client: TestClient, make_image: Callable[..., bytes], entries: dict[str, str], status: int, fragment: str
) -> None:
    png = make_image()
    contents = {"png": png, "bomb": b"\0" * 20_000_000, "": b""}
    before = client.get("/api/datasets").json()
    data = make_zip({k: contents[v] for k, v in entries.items()})
    assert_problem_says(client.post("/api/datasets", files={"file": ("x.zip", data)}), status, fragment)
    assert client.get("/api/datasets").json() == before


def test_corrupt_zip_and_bad_demo(client: TestClient) -> None:
    assert_problem_says(
        client.post("/api/datasets", files={"file": ("x.zip", b"PK\x03\x04garbage")}),
        422,
        "not a readable zip",
    )
    assert_problem_says(client.post("/api/datasets"), 422, "file")
    assert_problem_says(client.post("/api/datasets/demo", json={"name": "cifar"}), 422, "name")
    assert_problem_says(client.post("/api/datasets/demo", json={"per_class": 1}), 422, "per_class")


# --- jobs ---------------------------------------------------------------------------------------


def test_sse_delivers_progress_then_end(trained: dict[str, Any]) -> None:
    events = trained["events"]
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and events[-1][1] == {"status": "succeeded"}
    progress = [data for kind, data in events if kind == "progress"]
    assert len(progress) >= 3
    assert progress[0]["status"] in ("queued", "running")
    fractions = [p["progress"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[-1]["status"] == "succeeded"


def test_finished_job_body(client: TestClient, trained: dict[str, Any], faces: dict[str, Any]) -> None:
    job = client.get(f"/api/finetune/{trained['job_id']}").json()
    assert job["status"] == "succeeded" and job["model"] == "faces-fe" and job["error"] is None
    assert {k: job[k] for k in ("dataset_id", "base_model", "mode", "trainable", "epochs", "lr", "seed")} == {
        "dataset_id": faces["dataset_id"],
        "base_model": "efficientnet_lite0",
        "mode": "feature_extractor",
        "trainable": [],
        "epochs": 2,
        "lr": 0.01,
        "seed": 1,
    }
    assert job["trainable_params"] == 1280 * 2 + 2
    assert [h["epoch"] for h in job["history"]] == [1, 2]
    assert all(0 <= h["train_loss"] < 100 and 0 <= h["val_accuracy"] <= 1 for h in job["history"])
    evaluation = job["evaluation"]
    assert evaluation["classes"] == ["face", "not_face"] and evaluation["val_count"] == 2
    assert sum(map(sum, evaluation["confusion"])) == 2
    assert len(evaluation["misclassified"]) == 2 - sum(evaluation["confusion"][i][i] for i in range(2))
    assert trained["job_id"] in [j["job_id"] for j in client.get("/api/finetune").json()]


def test_registered_model_classifies_and_is_listed(client: TestClient, trained: dict[str, Any]) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()}
    info = models["faces-fe"]
    assert info["family"] == "finetuned" and info["num_classes"] == 2
    assert info["weights"]["source"] == "checkpoint" and info["weights"]["available"]
    result = client.post("/api/classify", json={"sample": "astronaut", "model": "faces-fe", "top_k": 5}).json()
    assert [p["label"] for p in result["predictions"]] in (["face", "not_face"], ["not_face", "face"])
    assert abs(sum(p["probability"] for p in result["predictions"]) - 1) < 1e-5
    detail = client.get("/api/finetuned/faces-fe").json()
    assert detail["classes"] == ["face", "not_face"] and detail["dataset_name"] == "demo: faces"
    assert detail["downloads"] == {
        "checkpoint": "/api/finetuned/faces-fe/checkpoint",
        "torchscript": "/api/finetuned/faces-fe/torchscript",
        "onnx": "/api/finetuned/faces-fe/onnx",
    }


@pytest.mark.slow
def test_downloads_checkpoint_and_torchscript(client: TestClient, trained: dict[str, Any]) -> None:
    raw = client.get("/api/finetuned/faces-fe/checkpoint")
    assert raw.status_code == 200
    checkpoint = torch.load(io.BytesIO(raw.content), weights_only=True)
    assert checkpoint["meta"]["classes"] == ["face", "not_face"]
    assert checkpoint["state_dict"]["classifier.weight"].shape == (2, 1280)
    scripted = torch.jit.load(io.BytesIO(client.get("/api/finetuned/faces-fe/torchscript").content))
    x = torch.randn(1, 3, 224, 224)
    module = client.app.state.model_store.get("faces-fe").module  # type: ignore[attr-defined]
    with torch.inference_mode():
        assert torch.allclose(scripted(x), module(x), atol=1e-4)
    import onnx

    graph = onnx.load_from_string(client.get("/api/finetuned/faces-fe/onnx").content)
    onnx.checker.check_model(graph)
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["logits"]


@pytest.mark.slow
def test_fine_tune_job_trains_the_chosen_block(client: TestClient, faces: dict[str, Any]) -> None:
    blocks = client.get("/api/finetune/blocks").json()
    assert blocks["embedding_dim"] == 1280 and blocks["total_params"] == 4_652_008
    assert [b["name"] for b in blocks["blocks"]][-2:] == ["blocks.6", "head"]
    block6 = next(b["num_params"] for b in blocks["blocks"] if b["name"] == "blocks.6")
    response = client.post(
        "/api/finetune",
        json={
            "dataset_id": faces["dataset_id"],
            "mode": "fine_tune",
            "trainable": ["blocks.6"],
            "epochs": 1,
            "batch_size": 4,
            "augment": True,
            "name": "faces-ft",
        },
    )
    queued = client.get(f"/api/finetune/{response.json()['job_id']}").json()
    assert queued["trainable_params"] == block6 + 1280 * 2 + 2  # known before it trains
    job = wait_for(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["trainable_params"] == block6 + 1280 * 2 + 2
    assert job["lr"] == 0.001
    assert client.post("/api/classify", json={"sample": "cat", "model": "faces-ft"}).status_code == 200
    assert client.delete("/api/finetuned/faces-ft").status_code == 204
    assert_problem_says(client.post("/api/classify", json={"sample": "cat", "model": "faces-ft"}), 404, "unknown model")
    assert_problem_says(client.get("/api/finetuned/faces-ft"), 404)


@pytest.mark.slow
def test_cancel_a_running_job_and_dataset_in_use(client: TestClient, faces: dict[str, Any]) -> None:
    response = client.post(
        "/api/finetune",
        json={
            "dataset_id": faces["dataset_id"],
            "epochs": 100,
            "mode": "fine_tune",
            "trainable": ["head"],
            "batch_size": 1,
        },
    )
    job_id = response.json()["job_id"]
    assert_problem_says(client.delete(f"/api/datasets/{faces['dataset_id']}"), 409, "used by job")
    deadline = time.monotonic() + 60
    while client.get(f"/api/finetune/{job_id}").json()["phase"] != "training" and time.monotonic() < deadline:
        time.sleep(0.2)
    # one job at a time: a second one waits in the queue, and cancelling it there is immediate
    waiting = client.post("/api/finetune", json={"dataset_id": faces["dataset_id"], "name": "never-run"}).json()
    assert client.get(f"/api/finetune/{waiting['job_id']}").json()["status"] == "queued"
    dropped = client.delete(f"/api/finetune/{waiting['job_id']}").json()
    assert (dropped["status"], dropped["phase"], dropped["model"]) == ("cancelled", "cancelled", None)
    cancelled = client.delete(f"/api/finetune/{job_id}").json()
    assert cancelled["cancel_requested"] is True and cancelled["status"] == "running"
    job = wait_for(client, job_id, timeout=30)
    assert job["status"] == "cancelled" and job["model"] is None
    assert client.get(f"/api/datasets/{faces['dataset_id']}").status_code == 200  # nothing was lost
    assert_problem_says(client.delete(f"/api/finetune/{job_id}"), 409, "cancelled already")
    assert wait_for(client, waiting["job_id"])["status"] == "cancelled"  # the runner skipped it
    assert "never-run" not in [m["name"] for m in client.get("/api/models").json()]


@pytest.mark.parametrize(
    ("changes", "status", "fragment"),
    [
        ({"dataset_id": "nope"}, 404, "unknown dataset"),
        ({"base_model": "nope"}, 404, "unknown model"),
        ({"base_model": "resnet18"}, 409, "no weights"),
        ({"epochs": 0}, 422, "epochs"),
        ({"epochs": 101}, 422, "epochs"),
        ({"lr": 0}, 422, "lr"),
        ({"lr": 2}, 422, "lr"),
        ({"val_split": 0.9}, 422, "val_split"),
        ({"mode": "fine_tune"}, 422, "at least one block"),
        ({"mode": "fine_tune", "trainable": ["blocks.9"]}, 422, "unknown blocks ['blocks.9']"),
        ({"trainable": ["head"]}, 422, "must be empty in feature_extractor mode"),
        ({"name": "Bad Name!"}, 422, "name"),
        ({"name": "efficientnet_lite0"}, 409, "exists already"),
        ({"mode": "sideways"}, 422, "mode"),
    ],
)
def test_bad_job_requests(
    client: TestClient, faces: dict[str, Any], changes: dict[str, Any], status: int, fragment: str
) -> None:
    before = len(client.get("/api/finetune").json())
    response = client.post("/api/finetune", json={"dataset_id": faces["dataset_id"], **changes})
    assert_problem_says(response, status, fragment)
    assert len(client.get("/api/finetune").json()) == before


def test_unknown_job_and_model(client: TestClient) -> None:
    for response in (
        client.get("/api/finetune/nope"),
        client.get("/api/finetune/nope/events"),
        client.delete("/api/finetune/nope"),
        client.get("/api/finetuned/nope"),
        client.get("/api/finetuned/nope/checkpoint"),
        client.delete("/api/finetuned/nope"),
    ):
        assert_problem_says(response, 404)


def test_restart_keeps_models_and_interrupts_running_jobs(
    settings: Settings, trained: dict[str, Any], faces: dict[str, Any]
) -> None:
    registry = Registry(settings.data_dir / "convscope.sqlite3")
    done = registry.get("jobs", trained["job_id"])
    assert done is not None
    registry.put("jobs", done | {"job_id": "crashed", "status": "running", "name": "crashed", "model": None})
    registry.close()
    with TestClient(create_app(settings)) as fresh:
        assert fresh.get("/api/finetune/crashed").json()["status"] == "interrupted"
        result = fresh.post("/api/classify", json={"sample": "cat", "model": "faces-fe"})
        assert result.status_code == 200
        assert {p["label"] for p in result.json()["predictions"]} == {"face", "not_face"}
        assert fresh.get(f"/api/finetune/{trained['job_id']}").json()["status"] == "succeeded"


def test_registered_model_works_in_feature_maps_and_explanations(client: TestClient, trained: dict[str, Any]) -> None:
    features = client.post("/api/features", json={"sample": "cat", "model": "faces-fe"})
    assert features.status_code == 200, features.text
    assert features.json()["model"] == "faces-fe"
    explanation = client.post("/api/explain", json={"sample": "astronaut", "model": "faces-fe", "target": 1})
    assert explanation.status_code == 200, explanation.text
    body = explanation.json()
    assert (body["model"], body["target"], body["label"]) == ("faces-fe", 1, "not_face")
    assert_problem_says(client.post("/api/explain", json={"sample": "cat", "model": "faces-fe", "target": 2}), 422)
