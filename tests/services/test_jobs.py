"""The job registry survives a restart: running jobs become interrupted, records stay readable."""

from __future__ import annotations

import time
from pathlib import Path

from app.core.config import Settings
from app.services.datasets import DatasetStore
from app.services.jobs import JobManager
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
    registry.put("jobs", job_doc("j1", "running"))
    registry.put("jobs", job_doc("j2", "succeeded"))
    assert registry.get("jobs", "j1") == job_doc("j1", "running") | {
        "created": registry.get("jobs", "j1")["created"]
    }
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
