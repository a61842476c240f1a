"""The training process: one fine-tune job, run in a child process started by the job runner.

A separate process because torch's thread pool is process-wide: the child gets ``train_threads`` threads
and a lower scheduling priority (``nice``), so the API's forward passes keep their cores while a job trains.
It talks to its parent only through a queue of ``(kind, payload)`` messages (``progress``, ``done``,
``cancelled`` or ``error``); the parent asks it to stop by setting an event, polled after every batch.

Imports stay light (no web framework): the child starts with a fresh interpreter.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2 as T

from app.cnn.models import ModelSpec, default_zoo
from app.cnn.training import (
    Progress,
    TrainConfig,
    TrainingCancelled,
    stratified_split,
    train,
    with_new_classifier,
)


def load_views(spec: ModelSpec, folder: Path, files: list[str]) -> torch.Tensor:
    """uint8 crops ``(N, 3, H, W)`` of the dataset's files, as the base model's preprocessing shows them."""
    views = []
    for name in files:
        with Image.open(folder / name) as image:
            image.seek(0)
            rgb = image.convert("RGB")
        views.append(T.functional.pil_to_tensor(spec.preprocessing.view(rgb)))  # (3, H, W) uint8
    return torch.stack(views)  # (N, 3, H, W)


def save_atomically(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def run_job(job: dict[str, Any], messages: Any, cancel: Any) -> None:
    """Entry point of the child process. ``messages`` is a multiprocessing queue, ``cancel`` an event."""
    try:
        if job["nice"]:
            os.nice(job["nice"])
        torch.set_num_threads(job["threads"] or (os.cpu_count() or 1))
        messages.put(("done", _train(job, messages, cancel)))
    except TrainingCancelled:
        messages.put(("cancelled", {}))
    except Exception as exc:  # anything: the parent records it as the job's failure
        messages.put(("error", {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}))


def _train(job: dict[str, Any], messages: Any, cancel: Any) -> dict[str, Any]:
    device = torch.device(job["device"])
    spec = default_zoo()[job["base_model"]]
    labels: list[int] = [label for label, _ in job["items"]]
    messages.put(("progress", {"phase": "loading images"}))
    views = load_views(spec, Path(job["dataset_dir"]), [name for _, name in job["items"]])
    train_idx, val_idx = stratified_split(labels, job["val_split"], job["seed"])
    y = torch.tensor(labels)
    messages.put(("progress", {"phase": "loading the base model"}))
    torch.manual_seed(job["seed"])  # the new classifier's initial weights
    model = with_new_classifier(spec.load(Path(job["models_dir"])), len(job["classes"])).to(device)
    config = TrainConfig(
        mode=job["mode"],
        trainable=tuple(job["trainable"]),
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        lr=job["lr"],
        augment=job["augment"],
        seed=job["seed"],
        mean=spec.preprocessing.mean,
        std=spec.preprocessing.std,
    )
    last = 0.0

    def on_progress(p: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 0.25 and p.step not in (0, p.steps):
            return  # throttled: the API polls a few times a second at most
        last = now
        messages.put(
            (
                "progress",
                {
                    "phase": "embedding" if p.step == 0 and not p.history else "training",
                    "epoch": p.epoch,
                    "step": p.step,
                    "steps": p.steps,
                    "progress": p.fraction,
                    "eta_s": p.eta_s,
                    "history": [asdict(h) for h in p.history],
                },
            )
        )

    result = train(
        model,
        views[train_idx],
        y[train_idx],
        views[val_idx],
        y[val_idx],
        config,
        device,
        on_progress=on_progress,
        should_stop=cancel.is_set,
    )
    assert result.evaluation is not None
    model = model.cpu().eval()
    meta = {
        "name": job["name"],
        "base_model": job["base_model"],
        "classes": job["classes"],
        "preprocessing": spec.preprocessing.as_dict(),
        "mode": job["mode"],
        "trainable": job["trainable"],
        "val_accuracy": result.evaluation.accuracy,
        "created": time.time(),
        "job_id": job["job_id"],
    }
    save_atomically({"state_dict": model.state_dict(), "meta": meta}, Path(job["checkpoint"]))
    return {
        "history": [asdict(h) for h in result.history],
        "evaluation": result.evaluation.as_dict(),
        "val_items": val_idx,
        "trainable_params": result.trainable_params,
        "total_params": sum(p.numel() for p in model.parameters()),
    }
