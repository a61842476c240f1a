"""The explore API on the real EfficientNet-Lite0: whole bodies, bad inputs as problem+json, no hook left."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.api.problems import assert_problem_says
from tests.cnn.test_features import hook_count


def png(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))


@pytest.fixture(scope="module")
def lite0_module(client):
    return client.app.state.model_store.get("efficientnet_lite0").module


@pytest.fixture(autouse=True)
def _no_hook_left(client) -> None:
    yield
    store = client.app.state.model_store
    if store.is_loaded("efficientnet_lite0"):
        assert hook_count(store.get("efficientnet_lite0").module) == 0


# --- architecture ----------------------------------------------------------------------------------------


def test_architecture_of_lite0(client, lite0_module) -> None:
    r = client.get("/api/models/efficientnet_lite0/architecture")
    assert r.status_code == 200
    body = r.json()
    real = sum(p.numel() for p in lite0_module.parameters())
    assert (body["model"], body["input_shape"], body["total_params"], body["trainable_params"]) == (
        "efficientnet_lite0", [3, 224, 224], real, real
    )
    assert body["weights_available"] is True
    assert sum(la["params_weight"] + la["params_bias"] + la["params_other"] for la in body["layers"]) == real
    assert body["layers"][0] == {
        "path": "conv_stem", "type": "Conv2dSame", "depth": 1, "parent": "", "is_leaf": True,
        "output_shape": [32, 112, 112], "params_weight": 864, "params_bias": 0, "params_other": 0,
        "params_total": 864, "trainable": True, "kernel_size": [3, 3], "stride": [2, 2], "padding": [0, 0],
        "dilation": [1, 1], "groups": 1,
        "receptive_field": {"size": [3, 3], "jump": [2, 2], "start": [1.0, 1.0]},
        "fc_equivalent_params": (3 * 224 * 224) * (32 * 112 * 112),
    }
    by_path = {la["path"]: la for la in body["layers"]}
    assert by_path["classifier"]["output_shape"] == [1000] and by_path["classifier"]["params_bias"] == 1000
    assert by_path["blocks"]["params_total"] == sum(p.numel() for p in lite0_module.blocks.parameters())
    assert by_path["blocks.1.0.conv_dw"]["groups"] == 96


def test_architecture_without_weights_is_shown(client) -> None:
    body = client.get("/api/models/resnet18/architecture").json()
    assert body["weights_available"] is False and body["total_params"] == 11_689_512
    layer4 = next(la for la in body["layers"] if la["path"] == "layer4")
    assert layer4["output_shape"] == [512, 7, 7] and layer4["receptive_field"]["size"] == [435, 435]


def test_architecture_of_an_unknown_model(client) -> None:
    body = assert_problem_says(client.get("/api/models/nope/architecture"), 404, "unknown model 'nope'")
    assert "efficientnet_lite0" in body["detail"]


# --- feature maps ----------------------------------------------------------------------------------------


def test_features_default_layer_grid_and_stats(client) -> None:
    r = client.post("/api/features", json={"sample": "cat", "model": "efficientnet_lite0"})
    assert r.status_code == 200
    body = r.json()
    assert (body["layer"], body["shape"], body["input_size"]) == ("bn2", [1280, 7, 7], 224)
    grid = body["grid"]
    assert grid["columns"] * grid["rows"] >= 1280 > grid["columns"] * (grid["rows"] - 1)
    assert grid["order"] == list(range(1280))
    step = grid["tile"] + grid["gap"]
    assert png(grid["image"]).size == (grid["columns"] * step - 1, grid["rows"] * step - 1)
    assert [s["channel"] for s in body["stats"]] == list(range(1280))
    means = [s["mean"] for s in body["stats"]]
    assert [t["channel"] for t in body["top"]] == sorted(range(1280), key=lambda c: -means[c])[:8]
    assert all(0 <= s["min"] <= s["mean"] <= s["max"] <= 6 for s in body["stats"])  # after ReLU6
    assert body["receptive_field"]["jump"] == [32, 32]
    assert body["channel"] is None and body["channel_overlay"] is None


def test_switching_layers_reuses_the_forward_pass(client) -> None:
    client.post("/api/features", json={"sample": "coffee"})
    body = client.post(
        "/api/features",
        json={
            "sample": "coffee", "layer": "blocks.1.0.conv_pw", "sort": "activation", "top_k": 4, "channel": 5
        },
    ).json()
    assert body["cached"] is True and body["timings_ms"]["forward"] == 0
    assert body["shape"] == [96, 112, 112] and len(body["grid"]["order"]) == 96
    assert body["grid"]["order"][:4] == [t["channel"] for t in body["top"]]
    means = {s["channel"]: s["mean"] for s in body["stats"]}
    order_means = [means[c] for c in body["grid"]["order"]]
    assert order_means == sorted(order_means, reverse=True)
    assert png(body["channel_overlay"]).size == (224, 224)


def test_features_of_an_upload(client, make_image) -> None:
    files = {"file": ("g.png", make_image(size=(80, 60)), "image/png")}
    created = client.post("/api/images", files=files).json()
    body = client.post("/api/features", json={"image_id": created["image_id"], "layer": "conv_stem"}).json()
    assert body["shape"] == [32, 112, 112] and body["cached"] is False


@pytest.mark.parametrize(
    ("payload", "status", "fragments"),
    [
        ({"sample": "cat", "layer": "nope"}, 422, ("unknown layer 'nope'", "valid layers: conv_stem")),
        ({"sample": "cat", "layer": "classifier"}, 422, ("output shape [1000]", "no (C, H, W)")),
        ({"sample": "cat", "layer": "global_pool"}, 422, ("no (C, H, W)",)),
        ({"sample": "cat", "layer": "conv_stem", "channel": 32}, 422, ("channel must be in 0..31",)),
        ({"sample": "cat", "channel": -1}, 422, ("channel",)),
        ({"sample": "cat", "sort": "size"}, 422, ("sort",)),
        ({"sample": "cat", "top_k": 0}, 422, ("top_k",)),
        ({"sample": "cat", "model": "nope"}, 404, ("unknown model 'nope'",)),
        ({"sample": "cat", "model": "resnet18"}, 409, ("resnet18", "weights not available")),
        ({"sample": "nope"}, 404, ("unknown sample 'nope'",)),
        ({"image_id": "nope"}, 404, ("no image 'nope'",)),
        ({}, 422, ("exactly one of image_id",)),
    ],
)
def test_features_bad_input(client, payload, status, fragments) -> None:
    body = assert_problem_says(client.post("/api/features", json=payload), status, *fragments)
    if "unknown layer" in body["detail"]:
        assert "bn2" in body["valid_layers"] and "classifier" in body["valid_layers"]
    if "no (C, H, W)" in body["detail"]:
        assert "bn2" in body["valid_layers"] and "classifier" not in body["valid_layers"]


# --- head ------------------------------------------------------------------------------------------------


def test_head_agrees_with_classification(client, lite0_module) -> None:
    head = client.post("/api/head", json={"sample": "cat", "top_k": 3}).json()
    classified = client.post("/api/classify", json={"sample": "cat", "top_k": 3}).json()
    assert (head["layer"], head["in_features"], head["num_classes"]) == ("classifier", 1280, 1000)
    assert [c["label"] for c in head["classes"]] == [p["label"] for p in classified["predictions"]]
    for c, p in zip(head["classes"], classified["predictions"], strict=True):
        assert c["probability"] == pytest.approx(p["probability"], abs=1e-4)
        assert c["probability"] == pytest.approx(np.exp(c["logit"] - head["logsumexp"]), rel=1e-4)
    weight = lite0_module.classifier.weight.detach()[head["classes"][0]["index"]]
    logit = float(weight @ torch.tensor(head["features"])) + head["bias"]
    assert logit == pytest.approx(head["classes"][0]["logit"], abs=1e-2)
    products = [c["product"] for c in head["contributions"]]
    assert products == sorted(products, reverse=True) and len(products) == 8


def test_head_bad_input(client) -> None:
    assert_problem_says(client.post("/api/head", json={"sample": "cat", "top_k": 0}), 422, "top_k")
    assert_problem_says(client.post("/api/head", json={"sample": "cat", "model": "vgg11"}), 409, "vgg11")


# --- filters ---------------------------------------------------------------------------------------------


def test_first_layer_filters_are_rgb_tiles(client, lite0_module) -> None:
    body = client.get("/api/models/efficientnet_lite0/filters", params={"filter": 7}).json()
    assert (body["layer"], body["shape"], body["mode"]) == ("conv_stem", [32, 3, 3, 3], "rgb")
    assert body["filter"] == 7
    assert body["grid"]["order"] == list(range(32)) and body["bias"] is None
    assert np.allclose(body["values"], lite0_module.conv_stem.weight.detach()[7].numpy())
    assert body["conv_layers"][0] == "conv_stem" and "conv_head" in body["conv_layers"]
    grid = png(body["grid"]["image"])
    assert grid.mode == "RGB" and grid.size[0] == body["grid"]["columns"] * (body["grid"]["tile"] + 1) - 1


def test_deeper_filters_per_input_channel(client, lite0_module) -> None:
    body = client.get(
        "/api/models/efficientnet_lite0/filters", params={"layer": "blocks.1.0.conv_pwl", "filter": 23}
    ).json()
    assert (body["shape"], body["mode"], body["filter"]) == ([24, 96, 1, 1], "per_input_channel", 23)
    assert len(body["grid"]["order"]) == 96
    assert np.allclose(body["values"], lite0_module.blocks[1][0].conv_pwl.weight.detach()[23].numpy())


@pytest.mark.parametrize(
    ("url", "status", "fragment"),
    [
        ("/api/models/efficientnet_lite0/filters?layer=bn1", 422, "not a convolution; choose one of: conv_"),
        ("/api/models/efficientnet_lite0/filters?filter=32", 422, "filter must be in 0..31"),
        ("/api/models/efficientnet_lite0/filters?filter=-1", 422, "filter"),
        ("/api/models/nope/filters", 404, "unknown model"),
        ("/api/models/alexnet/filters", 409, "alexnet"),
    ],
)
def test_filters_bad_input(client, url, status, fragment) -> None:
    assert_problem_says(client.get(url), status, fragment)


# --- explanations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "method", "side"),
    [
        ({"method": "gradcam"}, "gradcam", 7),
        ({"method": "gradcam++", "layer": "blocks.5"}, "gradcam++", 7),
        ({"method": "gradcam", "layer": "blocks.3"}, "gradcam", 14),
        ({"method": "saliency"}, "saliency", 56),
        ({"method": "saliency", "smoothgrad_samples": 3, "noise": 0.2}, "smoothgrad", 56),
        ({"method": "occlusion", "window": 112, "stride": 56}, "occlusion", 56),
    ],
)
def test_explanations(client, payload, method, side) -> None:
    r = client.post("/api/explain", json={"sample": "cat", **payload})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["method"], body["target"], body["label"]) == (method, 282, "tiger cat")
    assert body["layer"] == (payload.get("layer", "bn2") if method.startswith("gradcam") else None)
    values = np.asarray(body["values"])
    assert values.shape == (side, side) and values.min() >= 0 and values.max() == pytest.approx(1, abs=1e-3)
    assert png(body["overlay"]).size == (224, 224) and png(body["heatmap"]).size == (224, 224)
    assert 0 < body["probability"] < 1


def test_explain_any_class(client) -> None:
    body = client.post("/api/explain", json={"sample": "cat", "target": 967}).json()
    assert (body["target"], body["label"]) == (967, "espresso") and body["probability"] < 0.01


@pytest.mark.parametrize(
    ("payload", "status", "fragments"),
    [
        ({"target": 1000}, 422, ("target must be a class index in 0..999",)),
        ({"target": -1}, 422, ("target",)),
        ({"method": "lime"}, 422, ("method",)),
        ({"layer": "classifier"}, 422, ("no (C, H, W)", "class activation map")),
        ({"layer": "nope"}, 422, ("unknown layer 'nope'",)),
        ({"method": "occlusion", "window": 8, "stride": 4}, 422, ("forward passes; the limit is 400",)),
        ({"method": "occlusion", "window": 300}, 422, ("at most the input size 224",)),
        ({"smoothgrad_samples": 33}, 422, ("smoothgrad_samples",)),
        ({"noise": 2}, 422, ("noise",)),
        ({"model": "mobilenet_v3_small"}, 409, ("mobilenet_v3_small",)),
        ({"model": "nope"}, 404, ("unknown model",)),
    ],
)
def test_explain_bad_input(client, payload, status, fragments) -> None:
    assert_problem_says(client.post("/api/explain", json={"sample": "cat", **payload}), status, *fragments)


def test_no_hook_remains_after_any_call(client, lite0_module) -> None:
    calls = [
        ("post", "/api/features", {"sample": "flower", "layer": "blocks.4"}),
        ("post", "/api/features", {"sample": "flower", "layer": "classifier"}),
        ("post", "/api/head", {"sample": "flower"}),
        ("post", "/api/explain", {"sample": "flower", "method": "gradcam++"}),
        ("post", "/api/explain", {"sample": "flower", "target": 5000}),
        ("post", "/api/explain", {"sample": "flower", "layer": "global_pool"}),
        ("get", "/api/models/efficientnet_lite0/filters", None),
        ("get", "/api/models/efficientnet_lite0/architecture", None),
    ]
    for method, url, payload in calls:
        response = client.post(url, json=payload) if method == "post" else client.get(url)
        assert response.status_code in (200, 422)
        assert hook_count(lite0_module) == 0, url
    assert all(p.grad is None for p in lite0_module.parameters())
    assert not lite0_module.training
