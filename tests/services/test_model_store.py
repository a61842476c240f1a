from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from app.cnn.models import default_zoo, efficientnet_lite0_spec
from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.services.model_store import ModelStore


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
