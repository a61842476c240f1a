from __future__ import annotations

from fastapi.testclient import TestClient


def test_explore_page_renders_with_models_and_samples(client: TestClient) -> None:
    response = client.get("/explore")
    assert response.status_code == 200
    assert response.template.name == "explore.html"  # type: ignore[attr-defined]
    context = response.context  # type: ignore[attr-defined]
    assert context["page"] == "explore" and context["default_model"] == "efficientnet_lite0"
    models = {m["name"]: m for m in context["models"]}
    assert models["efficientnet_lite0"]["available"] is True and models["vgg11"]["available"] is False
    html = response.text
    assert '<option value="resnet18" data-available="no">' in html
    assert '<a href="/explore" aria-current="page">Explore</a>' in html
    assert 'src="/static/js/explore.js"' in html
