"""Shared test plumbing: one app per session (models load once), image factories, a live server, a browser."""

from __future__ import annotations

import io
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import REPO_ROOT, Settings
from app.main import create_app

SAMPLES = REPO_ROOT / "static" / "samples"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _rng_guard() -> Iterator[None]:
    """Tests that seed torch/numpy/random do not leak their state into the next test."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    yield
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=data_dir, models_dir=tmp_path_factory.mktemp("models"), allow_downloads=False)


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / f"{name}.jpg").read_bytes()


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture
def make_image() -> Callable[..., bytes]:
    """Bytes of a real image file: ``make_image("RGB", (w, h), "PNG")``, filled with a gradient."""

    def make(mode: str = "RGB", size: tuple[int, int] = (64, 48), fmt: str = "PNG", **params: object) -> bytes:
        w, h = size
        ramp = np.add.outer(np.arange(h), np.arange(w)) % 256
        rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 128)], axis=-1).astype(np.uint8)
        return encode(Image.fromarray(rgb, "RGB").convert(mode), fmt, **params)

    return make


# --- a live server and a real browser ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app in a background thread, on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # its own data dir: a second app on the same SQLite file would mark the first one's running jobs interrupted
    live_settings = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("live-data")})
    with LiveServer(create_app(live_settings)) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright. Missing browser: a skip locally, a failure in CI."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium chromium-driver"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: object, live_server: LiveServer) -> Iterator[object]:
    """A fresh page on the live server; the test fails if the page logged a console error."""
    context = browser.new_context(base_url=live_server.url)  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    yield page
    context.close()
    assert errors == [], f"console errors: {errors}"
