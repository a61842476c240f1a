"""The job registry survives a restart: running jobs become interrupted, records stay readable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.core.config import Settings
from app.services.datasets import DatasetStore
from app.services.jobs import JobManager, JobRequest
from app.services.model_store import ModelStore
from app.services.registry import Registry
from app.services.trained_models import TrainedModels


def job_doc(job_id: str, status: str) -> dict[str, object]:
    return {"job_id": job_id, "status": status, "created": time.time(), "dataset_id": "d1", "name": job_id}


def manager(settings: Settings, registry: Registry) -> JobManager:
    store = ModelStore(settings)
    return JobManager(
        settings, registry, DatasetStore(settings, registry), TrainedModels(settings, registry, store), store
    )


def test_registry_round_trip(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    first = job_doc("j1", "running")
    registry.put("jobs", first)
    registry.put("jobs", job_doc("j2", "succeeded"))
    assert registry.get("jobs", "j1") == first
    assert [d["job_id"] for d in registry.all("jobs")] == ["j1", "j2"]
    assert registry.jobs_using("d1", ("queued", "running")) == ["j1"]
    assert registry.delete("jobs", "j1") and not registry.delete("jobs", "j1")
    assert registry.get("jobs", "j1") is None


def test_a_running_job_is_marked_interrupted_after_a_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = tmp_path / "convscope.sqlite3"
    first = Registry(path)
    for job_id, status in (("run", "running"), ("wait", "queued"), ("done", "succeeded")):
        first.put("jobs", job_doc(job_id, status))
    first.close()  # the server stops without finishing its jobs

    registry = Registry(path)
    jobs = manager(settings, registry)
    statuses = {d["job_id"]: d["status"] for d in jobs.all()}
    assert statuses == {"run": "interrupted", "wait": "interrupted", "done": "succeeded"}
    assert "server stopped" in jobs.get("run")["error"]
    assert registry.jobs_using("d1", ("queued", "running")) == []


@pytest.mark.slow
def test_stopping_the_server_interrupts_the_running_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, models_dir=tmp_path / "weights")
    registry = Registry(tmp_path / "convscope.sqlite3")
    jobs = manager(settings, registry)
    dataset = jobs.datasets.create_demo("faces", 2)
    jobs.start()
    request = JobRequest(
        dataset_id=dataset["id"], base_model="efficientnet_lite0", mode="fine_tune", trainable=("head",),
        epochs=100, batch_size=1, lr=None, val_split=0.2, augment=False, seed=0, name="stopped",
    )
    job_id = jobs.submit(request)["job_id"]
    deadline = time.monotonic() + 60
    while jobs.get(job_id)["phase"] != "training" and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs.stop()
    stored = registry.get("jobs", job_id)
    assert stored is not None and stored["status"] == "interrupted"
    assert registry.get("models", "stopped") is None and not (tmp_path / "models" / "stopped.pt").exists()
