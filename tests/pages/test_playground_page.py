from __future__ import annotations

from fastapi.testclient import TestClient


def test_playground_renders_with_samples_and_limits(client: TestClient) -> None:
    response = client.get("/playground")
    assert response.status_code == 200
    assert response.template.name == "playground.html"  # type: ignore[attr-defined]
    context = response.context  # type: ignore[attr-defined]
    assert context["page"] == "playground"
    assert (context["max_kernel"], context["max_stride"], context["max_dilation"], context["max_layers"]) == (
        31, 16, 8, 12)
    assert [s.name for s in context["samples"]] == ["cat", "coffee", "astronaut", "rocket", "china", "flower"]
    html = response.text
    assert '<a href="/playground" aria-current="page">Playground</a>' in html
    assert 'data-max-kernel="31" data-max-layers="12"' in html
    assert 'src="/static/js/playground.js"' in html
