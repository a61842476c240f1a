"""Every page is reachable from the navigation bar, which marks where you are."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

PAGES = [("Classify", "/", "Classify a photo"), ("Playground", "/playground", "Convolution playground"),
         ("Explore", "/explore", "Look inside a network"), ("Transfer learning", "/transfer", "Transfer learning")]


def test_the_nav_bar_leads_to_every_page_in_course_order(page) -> None:
    page.goto("/")
    assert page.locator("header nav a").all_inner_texts() == [label for label, _, _ in PAGES] + ["API"]
    for label, path, heading in PAGES:
        page.click(f"header nav >> text='{label}'")
        page.wait_for_url(f"**{path}")
        assert page.locator("h1").inner_text() == heading
        assert page.locator("header nav a[aria-current='page']").inner_text() == label
