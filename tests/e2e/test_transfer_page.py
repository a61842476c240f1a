"""The transfer-learning page in a real browser: demo dataset, a job with live progress, the result."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.conftest import SAMPLES

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_train_on_the_demo_and_use_the_model(page) -> None:
    page.goto("/transfer")
    page.select_option("#demo-select", "faces")
    page.fill("#demo-per-class", "4")
    page.click("#demo-button")
    page.locator("#classes li", has_text="not_face").wait_for(timeout=10_000)
    assert page.locator("#classes li").all_inner_texts()[0].startswith("face 4 images")
    assert page.locator("#classes li img").count() == 8
    # 1280 features + 1 bias, times 2 classes, in feature-extractor mode; blocks count in fine-tune mode
    page.wait_for_function("document.getElementById('trainable-count').textContent === '2,562'")
    assert page.locator("#block-toggles input").first.is_disabled()
    page.check("input[name=mode][value=fine_tune]")
    page.wait_for_function("document.getElementById('trainable-count').textContent === '1,020,162'")
    page.uncheck("#block-toggles input[value='blocks.6']")
    page.wait_for_function("document.getElementById('trainable-count').textContent === '414,722'")
    page.check("input[name=mode][value=feature_extractor]")

    page.fill("#epochs", "3")
    page.fill("#batch-size", "1")  # one image per step: progress arrives in several events
    page.fill("#model-name", "browser-faces")
    page.evaluate(
        """() => {
            window.progressSeen = [];
            const bar = document.getElementById("progress-bar");
            const observer = new MutationObserver(() => window.progressSeen.push(bar.value));
            observer.observe(bar, { attributes: true });
        }"""
    )
    page.click("#start")
    page.locator("#result").wait_for(state="visible", timeout=90_000)
    seen = page.evaluate("window.progressSeen")
    assert seen == sorted(seen) and seen[-1] == 1
    assert any(0 < value < 1 for value in seen), seen  # the bar moved while the job ran
    assert "succeeded" in page.locator("#job-status").inner_text()
    assert page.locator("#result-name").inner_text() == "browser-faces"
    assert page.locator("#confusion td").count() == 4
    assert page.locator("#loss-chart polyline").count() == 2
    assert "browser-faces" in page.locator("#models").inner_text()

    page.locator("#confusion td").first.click()
    assert "classified correctly" in page.locator("#cell-images").inner_text()
    page.click("button.try-sample[data-sample='astronaut']")
    page.locator("#try-predictions li").nth(1).wait_for(timeout=20_000)
    labels = {t.split(":")[0] for t in page.locator("#try-predictions li").all_inner_texts()}
    assert labels == {"face", "not_face"}
    assert page.get_attribute("#download-checkpoint", "href") == "/api/finetuned/browser-faces/checkpoint"

    # the new model is one click away on the classify page, chosen already
    page.click("#open-classify")
    page.wait_for_url("**/?model=browser-faces")
    assert page.locator("#model-select").input_value() == "browser-faces"
    page.click("button[data-sample='astronaut']")
    page.locator("#predictions li").nth(1).wait_for(timeout=20_000)
    assert set(page.locator("#predictions li .label").all_inner_texts()) == {"face", "not_face"}


def test_a_bad_zip_shows_a_clear_message(page, tmp_path) -> None:
    bad = tmp_path / "one-class.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        for i in range(2):
            archive.write(SAMPLES / "cat.jpg", f"cats/{i}.jpg")
    page.goto("/transfer")
    page.set_input_files("#zip-input", str(bad))
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "at least 2 class folders" in error.inner_text()
    page.console_errors.clear()  # the browser logs the failed request's 422 itself

    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive:
        for i, name in enumerate(("cat", "coffee", "cat", "coffee")):
            archive.write(SAMPLES / f"{name}.jpg", f"{name}/{i}.jpg")
    path = tmp_path / "two.zip"
    path.write_bytes(good.getvalue())
    page.set_input_files("#zip-input", str(path))
    page.locator("#classes li", has_text="coffee").wait_for(timeout=10_000)
    assert page.locator("#error").is_hidden()
    assert [t.split(" ")[0] for t in page.locator("#classes li").all_inner_texts()] == ["cat", "coffee"]
