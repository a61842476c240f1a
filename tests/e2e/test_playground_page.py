"""The playground in a real browser: edit a kernel, change stride, share the URL, step through the maths."""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

import pytest

from tests.conftest import SAMPLES

pytestmark = pytest.mark.browser


def wait_for_shape(page, index: int, shape: str) -> None:
    page.wait_for_function(
        """([i, shape]) => {
            const fig = document.querySelector(`.pg-stage.output[data-index="${i}"] .shape`);
            return fig && fig.textContent === shape;
        }""",
        arg=[index, shape],
        timeout=20_000,
    )


def output_src(page, index: int = 0) -> str:
    return page.locator(f".pg-stage.output[data-index='{index}'] img").get_attribute("src")


def test_default_pipeline_shows_shape_and_formula(page) -> None:
    page.goto("/playground")
    wait_for_shape(page, 0, "3×512×512")
    assert page.locator("#input-shape").inner_text() == "3×512×512"
    formula = page.locator(".pg-stage.output .formula").first.inner_text()
    assert formula.startswith("H: floor((512 + 2×1 − 1×(3 − 1) − 1) / 1) + 1 = 512")
    assert "#s=" in page.url
    assert page.locator("#layers .preset").first.input_value() == "sobel_x"


def test_changing_a_kernel_cell_changes_the_output(page) -> None:
    page.goto("/playground")
    wait_for_shape(page, 0, "3×512×512")
    before = output_src(page)
    page.fill("#layers .kernel input[data-r='1'][data-c='1']", "5")
    page.wait_for_function("(before) => document.querySelector('.pg-stage.output img').src !== before",
                           arg=before, timeout=20_000)
    assert page.locator("#layers .preset").first.input_value() == ""  # no longer Sobel: custom
    assert page.locator(".preset-description").first.inner_text() == "your own kernel"


def test_stride_two_halves_the_reported_size(page) -> None:
    page.goto("/playground")
    wait_for_shape(page, 0, "3×512×512")
    page.fill("#layers .stride", "2")
    wait_for_shape(page, 0, "3×256×256")
    assert page.locator("#layers .layer-shape").first.inner_text() == "→ 3×256×256"
    assert "= 256" in page.locator(".pg-stage.output .formula").first.inner_text()


def test_a_shared_url_reproduces_the_state(page, browser, live_server) -> None:
    page.goto("/playground")
    wait_for_shape(page, 0, "3×512×512")
    page.select_option("#layers .preset", "gaussian_5")
    page.fill("#layers .stride", "3")
    page.click("#add-pool")
    page.select_option("#render-mode", "minmax")
    page.click("button.sample[data-sample='coffee']")
    # 512×341, 5×5 kernel, padding 1, stride 3: floor((341 + 2 − 4 − 1)/3) + 1 = 113 (and 170); pool 2: 56×85
    wait_for_shape(page, 1, "3×56×85")
    shared = page.url

    other = browser.new_context(base_url=live_server.url).new_page()
    other.goto(shared)
    wait_for_shape(other, 1, "3×56×85")
    assert other.locator("#layers .preset").first.input_value() == "gaussian_5"
    assert other.locator("#layers .stride").first.input_value() == "3"
    assert other.locator("#render-mode").input_value() == "minmax"
    assert other.locator("#layers li").count() == 2
    assert other.locator("button.sample.chosen").get_attribute("data-sample") == "coffee"
    other.context.close()


def test_add_reorder_and_remove_layers(page) -> None:
    state = {"image": {"sample": "cat"}, "layers": [{"type": "activation", "fn": "abs"}]}
    page.goto(f"/playground#s={quote(json.dumps(state))}")
    wait_for_shape(page, 0, "3×300×451")
    page.click("#add-pool")
    wait_for_shape(page, 1, "3×150×225")
    page.click("#layers li[data-index='1'] .move-up")  # pool first, then abs
    page.wait_for_function("document.querySelector('#layers li').classList.contains('layer-pool')")
    wait_for_shape(page, 0, "3×150×225")
    page.click("#layers li[data-index='0'] .remove")
    wait_for_shape(page, 0, "3×300×451")
    assert page.locator("#layers li").count() == 1


def test_step_through_the_classic_pooling_example(page) -> None:
    state = {"image": {"sample": "cat"}, "max_side": 64,
             "layers": [{"type": "pool", "mode": "max", "kernel_size": 3, "stride": 1, "padding": 0}]}
    page.goto(f"/playground#s={quote(json.dumps(state))}")
    page.wait_for_function("document.getElementById('step-position').textContent === 'step 1 of 9'")
    assert page.locator("#step-text").inner_text() == "out[0, 0] = max(3, 3, 2, 0, 0, 1, 3, 1, 2) = 3"
    assert page.locator("#padded td.win").count() == 9
    for _ in range(7):
        page.click("#step-next")
    assert page.locator("#step-text").inner_text() == "out[2, 1] = max(1, 2, 2, 0, 0, 2, 0, 0, 0) = 2"
    cells = page.locator("#steps-output td").all_inner_texts()
    assert cells == ["3", "3", "3", "3", "3", "3", "3", "2", "·"]
    page.click("#step-play")
    page.wait_for_function("document.getElementById('step-position').textContent === 'step 1 of 9'",
                           timeout=5_000)
    page.click("#step-play")  # pause
    assert page.locator("#step-play").inner_text() == "play"


def test_step_through_a_padded_convolution(page) -> None:
    state = {"image": {"sample": "cat"}, "max_side": 64, "matrix": "1 2\n3 4",
             "layers": [{"type": "conv", "kernel": [[1, 0], [0, -1]], "stride": 1, "padding": 1,
                         "padding_mode": "zeros", "dilation": 1, "bias": 0.5}]}
    page.goto(f"/playground#s={quote(json.dumps(state))}")
    page.wait_for_function("document.getElementById('step-position').textContent === 'step 1 of 9'")
    assert page.locator("#padded td.pad").count() == 12  # a 4×4 padded grid around the 2×2 input
    expected = "out[0, 0] = 0×1 + 0×0 + 0×0 + 1×-1 + 0.5 = -1 + 0.5 = -0.5"
    assert page.locator("#step-text").inner_text() == expected
    page.fill("#matrix", "1 2 3\n4 5 6\n7 8 9")
    page.wait_for_function("document.getElementById('step-position').textContent === 'step 1 of 16'")
    assert page.locator("#steps-shape").inner_text() == "4×4"


def test_a_bad_setting_shows_the_reason(page) -> None:
    page.goto("/playground")
    wait_for_shape(page, 0, "3×512×512")
    page.fill("#layers .dilation", "9")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "less than or equal to 8" in error.inner_text()
    page.console_errors.clear()  # the browser logs the 422 itself
    page.fill("#layers .dilation", "2")
    error.wait_for(state="hidden", timeout=10_000)


def test_upload_your_own_photo(page) -> None:
    page.goto("/playground")
    wait_for_shape(page, 0, "3×512×512")
    page.set_input_files("#file-input", str(SAMPLES / "coffee.jpg"))
    wait_for_shape(page, 0, "3×341×512")  # 600×400 scaled to a longest side of 512
    assert "image_id" in unquote(page.url)
    page.wait_for_function("document.getElementById('input-image').naturalWidth === 600")


def test_a_garbled_link_falls_back_to_the_defaults(page) -> None:
    page.goto("/playground#s=" + quote(json.dumps({"layers": [{"type": "conv", "kernel": "oops"}]})))
    wait_for_shape(page, 0, "3×512×512")
    assert page.locator("#layers .preset").first.input_value() == "sobel_x"
