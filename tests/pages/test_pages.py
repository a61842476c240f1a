from __future__ import annotations

from fastapi.testclient import TestClient


def test_index_renders_the_classify_page_with_models_and_samples(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.template.name == "index.html"  # type: ignore[attr-defined]
    context = response.context  # type: ignore[attr-defined]
    assert context["page"] == "classify"
    assert context["default_model"] == "efficientnet_lite0"
    models = {m["name"]: m for m in context["models"]}
    assert models["efficientnet_lite0"]["available"] is True
    assert models["resnet18"]["available"] is False
    assert [s.name for s in context["samples"]] == ["cat", "coffee", "astronaut", "rocket", "china", "flower"]
    html = response.text
    summary = "11.7M parameters · input 3×224×224 · 1000 classes"
    assert f'<option value="resnet18" data-size="224×224" data-summary="{summary}" disabled>' in html
    assert "(weights not available)" in html
    assert 'src="/static/js/classify.js"' in html
