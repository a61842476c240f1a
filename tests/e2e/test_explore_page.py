"""The explore page in a real browser: architecture, feature maps, receptive fields, filters, head, CAMs."""

from __future__ import annotations

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.browser


def wait_for_layer(page, prefix: str) -> None:
    script = f"document.getElementById('features-layer').textContent.startsWith('{prefix}')"
    page.wait_for_function(script, timeout=30_000)


def open_with_cat(page) -> None:
    page.goto("/explore")
    page.locator("#arch-table tbody tr").first.wait_for(timeout=30_000)
    page.click("button[data-sample='cat']")
    wait_for_layer(page, "bn2")


def test_architecture_table_and_filters_load(page) -> None:
    page.goto("/explore")
    first = page.locator("#arch-table tbody tr").first
    first.wait_for(timeout=30_000)
    assert first.locator("td").nth(0).inner_text() == "conv_stem"
    assert first.locator("td").nth(2).inner_text() == "32×112×112"
    assert "4,652,008 parameters" in page.locator("#arch-summary").inner_text()
    page.locator("#filters-grid").wait_for(state="visible", timeout=30_000)
    assert page.locator("#filters-layer").inner_text().startswith("conv_stem: 32×3×3×3")


def test_choose_a_layer_see_its_grid_then_grad_cam(page) -> None:
    open_with_cat(page)
    assert page.locator("#feature-grid").is_visible()
    assert page.locator("#head-table tbody tr").first.locator("td").first.inner_text() == "tiger cat"
    first_grid = page.get_attribute("#feature-grid", "src")
    page.click("#arch-table tr[data-path='blocks.2']")
    wait_for_layer(page, "blocks.2: 40×28×28")
    assert page.get_attribute("#feature-grid", "src") != first_grid
    assert page.locator("#arch-table tr.selected").get_attribute("data-path") == "blocks.2"

    page.select_option("#method-select", "gradcam")
    page.click("#explain-button")
    overlay = page.locator("#explain-overlay")
    overlay.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("document.getElementById('explain-overlay').naturalWidth === 224")
    caption = page.locator("#explain-caption").inner_text()
    assert caption.startswith("gradcam for “tiger cat”") and "at layer bn2" in caption


def test_clicking_a_feature_cell_shows_its_receptive_field(page) -> None:
    open_with_cat(page)
    page.click("#arch-table tr[data-path='blocks.1']")  # 24×56×56, receptive field well inside the image
    wait_for_layer(page, "blocks.1: 24×56×56")
    grid = page.locator("#feature-grid")
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 5, box["y"] + 5)  # channel 0, a unit near its top-left
    page.locator("#rf-box").wait_for(state="visible", timeout=30_000)
    page.locator("#channel-overlay").wait_for(state="visible")
    info = page.locator("#rf-info").inner_text()
    arch = page.request.get("/api/models/efficientnet_lite0/architecture").json()
    rf = next(la for la in arch["layers"] if la["path"] == "blocks.1")["receptive_field"]
    i, j = (int(v) for v in info.split("unit (")[1].split(")")[0].split(", "))
    top = max(0, round(rf["start"][0] + i * rf["jump"][0] - (rf["size"][0] - 1) / 2))
    left = max(0, round(rf["start"][1] + j * rf["jump"][1] - (rf["size"][1] - 1) / 2))
    assert info.startswith("channel 0, unit (") and f"receptive field {rf['size'][0]}px" in info
    assert f"rows {top}–" in info and f"columns {left}–" in info
    size = page.locator("#rf-box").bounding_box()
    view = page.locator("#input-view").bounding_box()
    assert size["width"] == pytest.approx(rf["size"][1] * view["width"] / 224, abs=1.5)


def test_other_explanations_and_a_chosen_class(page) -> None:
    open_with_cat(page)
    page.select_option("#class-select", index=1)
    chosen = page.locator("#class-select option").nth(1).inner_text().split(" (")[0]
    page.select_option("#method-select", "smoothgrad")
    page.click("#explain-button")
    page.wait_for_function("document.getElementById('explain-caption').textContent.startsWith('smoothgrad')",
                           timeout=60_000)
    assert f"“{chosen}”" in page.locator("#explain-caption").inner_text()
    # any class by its index, here one the model does not see at all
    page.fill("#class-index", "967")
    page.select_option("#method-select", "gradcam++")
    page.click("#explain-button")
    page.wait_for_function("document.getElementById('explain-caption').textContent.startsWith('gradcam++')",
                           timeout=60_000)
    assert "“espresso”" in page.locator("#explain-caption").inner_text()
    page.fill("#class-index", "1000")
    page.click("#explain-button")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=30_000)
    assert "target must be a class index in 0..999" in error.inner_text()
    page.console_errors.clear()  # the browser logs the 422 response itself


def test_upload_and_a_model_without_weights(page) -> None:
    page.goto("/explore")
    page.locator("#arch-table tbody tr").first.wait_for(timeout=30_000)
    page.set_input_files("#file-input", str(SAMPLES / "coffee.jpg"))
    page.wait_for_function("document.querySelector('#head-table tbody tr') !== null", timeout=30_000)
    assert page.locator("#head-table tbody tr").first.locator("td").first.inner_text() == "espresso"
    page.select_option("#model-select", "resnet18")
    page.wait_for_function("document.getElementById('arch-summary').textContent.startsWith('11,689,512')",
                           timeout=30_000)
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "no trained weights" in error.inner_text()
