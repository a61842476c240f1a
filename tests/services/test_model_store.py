from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.cnn.models import default_zoo, efficientnet_lite0_spec
from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.services.classification import classify_images
from app.services.model_store import LoadedModel, ModelStore
from tests.conftest import SAMPLES


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(Settings(data_dir=tmp_path, models_dir=tmp_path, device="cpu"))


def test_concurrent_first_requests_build_the_model_once(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = efficientnet_lite0_spec()
    builds = []
    original = spec.build

    def counting_build() -> torch.nn.Module:
        builds.append(1)
        return original()

    store.register(type(spec)(**{**spec.__dict__, "build": counting_build}))
    results = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        results.append(store.get("efficientnet_lite0"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert len({id(r.module) for r in results}) == 1
    assert store.is_loaded("efficientnet_lite0")
    assert results[0].device == torch.device("cpu")


def test_unknown_model_lists_the_valid_ones(store: ModelStore) -> None:
    with pytest.raises(NotFound, match="unknown model 'nope'; choose one of: efficientnet_lite0, resnet18"):
        store.get("nope")


def test_missing_weights_are_a_conflict_naming_the_file(store: ModelStore) -> None:
    with pytest.raises(Conflict, match="put resnet18-f37072fd.pth in"):
        store.get("resnet18")
    assert not store.is_loaded("resnet18")


def test_register_and_unregister(store: ModelStore) -> None:
    spec = default_zoo()["alexnet"]
    renamed = type(spec)(**{**spec.__dict__, "name": "my_alexnet"})
    store.register(renamed)
    assert "my_alexnet" in store.names()
    store.unregister("my_alexnet")
    assert "my_alexnet" not in store.names()


def test_cuda_requested_without_cuda_is_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA"):
        ModelStore(Settings(data_dir=tmp_path, device="cuda"))


def _wait_until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_requests_waiting_for_the_slot_share_one_forward_pass(store: ModelStore) -> None:
    images = {n: Image.open(SAMPLES / f"{n}.jpg").convert("RGB") for n in ("cat", "coffee", "flower", "rocket")}
    alone = {n: classify_images(store, [img], "efficientnet_lite0", 3)[0] for n, img in images.items()}
    assert all(r.forward_batch == 1 for r in alone.values())
    results: dict[str, object] = {}
    with store.inference_slot():  # the slot is busy: every request below has to wait
        threads = [
            threading.Thread(target=lambda n=n, img=img: results.__setitem__(
                n, classify_images(store, [img], "efficientnet_lite0", 3)[0]))
            for n, img in images.items()
        ]
        for t in threads:
            t.start()
        _wait_until(lambda: len(store._waiting) == 4)
    for t in threads:
        t.join()
    for name, result in results.items():
        assert result.forward_batch == 4  # type: ignore[attr-defined]
        expected = alone[name].predictions
        got = result.predictions  # type: ignore[attr-defined]
        assert [p.index for p in got] == [p.index for p in expected]
        assert [p.probability for p in got] == pytest.approx([p.probability for p in expected], abs=1e-4)


def test_an_error_in_a_shared_forward_reaches_every_request(store: ModelStore) -> None:
    loaded = store.get("efficientnet_lite0")
    calls: list[int] = []

    def failing(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        raise ValueError("boom")

    errors: list[BaseException] = []

    def request() -> None:
        try:
            store.forward_merged(loaded, torch.zeros(2, 3, 8, 8), failing)
        except ValueError as exc:
            errors.append(exc)

    with store.inference_slot():
        threads = [threading.Thread(target=request) for _ in range(3)]
        for t in threads:
            t.start()
        _wait_until(lambda: len(store._waiting) == 3)
    for t in threads:
        t.join()
    assert calls == [6] and len(errors) == 3
    assert store._waiting == [] and store._busy == 0


def test_batches_are_merged_up_to_max_batch_and_never_across_models(tmp_path: Path) -> None:
    store = ModelStore(Settings(data_dir=tmp_path, models_dir=tmp_path, device="cpu", max_batch=4))
    lite0 = store.get("efficientnet_lite0")
    other = LoadedModel(dataclasses.replace(lite0.spec, name="other"), lite0.module, lite0.device)
    sizes: list[tuple[str, int]] = []

    def record(name: str):  # type: ignore[no-untyped-def]
        def fn(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
            sizes.append((name, len(batch)))
            return batch.flatten(1)[:, :1]
        return fn

    with store.inference_slot():
        threads = [threading.Thread(target=store.forward_merged, args=(m, torch.zeros(n, 3, 4, 4), record(m.spec.name)))
                   for m, n in ((lite0, 3), (other, 1), (lite0, 1), (lite0, 1))]
        for started, t in enumerate(threads, start=1):
            t.start()
            _wait_until(lambda n=started: len(store._waiting) == n)  # type: ignore[misc]
    for t in threads:
        t.join()
    # oldest first: 3 + 1 lite0 images fill max_batch=4; the other model and the last lite0 image go separately
    assert sorted(sizes) == sorted([("efficientnet_lite0", 4), ("other", 1), ("efficientnet_lite0", 1)])
