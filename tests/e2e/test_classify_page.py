"""The classify page in a real browser: upload a photo, see the prediction."""

from __future__ import annotations

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.browser


def test_upload_a_photo_and_see_its_class(page) -> None:
    page.goto("/")
    page.set_input_files("#file-input", str(SAMPLES / "coffee.jpg"))
    first = page.locator("#predictions li").first
    first.wait_for(timeout=30_000)
    assert first.locator(".label").inner_text() == "espresso"
    assert page.locator("#predictions li").count() == 5
    # the picture the model sees is the 224x224 crop, served by the API
    page.wait_for_function("document.getElementById('model-input').naturalWidth === 224")
    assert page.locator("#input-size").inner_text() == "224×224"


def test_sample_gallery_classifies_the_cat(page) -> None:
    page.goto("/")
    page.click("button[data-sample='cat']")
    first = page.locator("#predictions li .label").first
    first.wait_for(timeout=30_000)
    assert first.inner_text() in {"tabby", "tiger cat", "Egyptian cat"}


def test_a_bad_file_shows_a_clear_message(page, tmp_path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    page.goto("/")
    page.set_input_files("#file-input", str(bad))
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "not an image" in error.inner_text()
    page.console_errors.clear()  # the browser logs the failed request's 415 itself


def test_drop_an_image_on_the_drop_zone(page) -> None:
    page.goto("/")
    data = (SAMPLES / "coffee.jpg").read_bytes()
    page.evaluate(
        """async (bytes) => {
            const file = new File([new Uint8Array(bytes)], "coffee.jpg", { type: "image/jpeg" });
            const transfer = new DataTransfer();
            transfer.items.add(file);
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        list(data),
    )
    first = page.locator("#predictions li .label").first
    first.wait_for(timeout=30_000)
    assert first.inner_text() == "espresso"


def test_paste_an_image_and_switch_models(page) -> None:
    page.goto("/")
    # models without weights are listed but cannot be chosen
    assert page.locator("#model-select option[value='resnet18']").is_disabled()
    assert page.locator("#model-summary").inner_text() == "4.7M parameters · input 3×224×224 · 1000 classes"
    assert "weights not available" in page.locator("#model-select option[value='resnet18']").inner_text()
    data = (SAMPLES / "cat.jpg").read_bytes()
    page.evaluate(
        """(bytes) => {
            const file = new File([new Uint8Array(bytes)], "pasted.jpg", { type: "image/jpeg" });
            const transfer = new DataTransfer();
            transfer.items.add(file);
            document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
        }""",
        list(data),
    )
    first = page.locator("#predictions li .label").first
    first.wait_for(timeout=30_000)
    assert first.inner_text() in {"tabby", "tiger cat", "Egyptian cat"}
    assert page.locator("#original-size").inner_text() == "(451×300)"
    assert "efficientnet_lite0" in page.locator("#timings").inner_text()
