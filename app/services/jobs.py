"""Fine-tune jobs: a queue, one runner thread, one training process at a time, progress for polling and SSE.

A job is a registry row (so it survives a restart) mirrored by a live dict in memory that the runner updates
from the training process's messages; ``version`` grows with every change so that event streams know when to
send. A job that was queued or running when the server stopped is marked ``interrupted`` at start-up.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from app.cnn.training import block_param_counts
from app.core.config import Settings
from app.core.errors import Conflict, InvalidParameter, NotFound
from app.services.datasets import DatasetStore, check_classes
from app.services.model_store import ModelStore
from app.services.registry import Registry
from app.services.trained_models import TrainedModels
from app.services.training_worker import run_job

log = logging.getLogger("convscope.jobs")

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
DEFAULT_LR = {"feature_extractor": 1e-2, "fine_tune": 1e-3}


@dataclass(frozen=True)
class JobRequest:
    dataset_id: str
    base_model: str
    mode: Literal["feature_extractor", "fine_tune"]
    trainable: tuple[str, ...]
    epochs: int
    batch_size: int
    lr: float | None
    val_split: float
    augment: bool
    seed: int
    name: str | None


class JobManager:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        datasets: DatasetStore,
        models: TrainedModels,
        store: ModelStore,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.datasets = datasets
        self.models = models
        self.store = store
        self._jobs: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, int] = {}
        self._cancel: dict[str, Any] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._blocks: dict[str, dict[str, Any]] = {}
        self._mark_interrupted()

    # --- lifecycle -------------------------------------------------------------------------------
    def _mark_interrupted(self) -> None:
        for doc in self.registry.all("jobs"):
            if doc["status"] in ("queued", "running"):
                doc.update(
                    status="interrupted",
                    finished=time.time(),
                    error="the server stopped before this job finished; start it again.",
                )
                self.registry.put("jobs", doc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_forever, name="finetune-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the runner: the running job's process is stopped and the job marked interrupted."""
        self._stopping.set()
        for event in list(self._cancel.values()):
            event.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._mark_interrupted()

    # --- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            live = self._jobs.get(job_id)
            if live is not None:
                return copy.deepcopy(live)
        doc = self.registry.get("jobs", job_id)
        if doc is None:
            raise NotFound(f"unknown job {job_id!r}; GET /api/finetune lists them.")
        return doc

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)

    def all(self) -> list[dict[str, Any]]:
        docs = {d["job_id"]: d for d in self.registry.all("jobs")}
        with self._lock:
            docs |= {k: copy.deepcopy(v) for k, v in self._jobs.items()}
        return sorted(docs.values(), key=lambda d: d["created"])

    def blocks(self, base_model: str) -> dict[str, Any]:
        """The base network's blocks that can be unfrozen, with their parameter counts."""
        self._check_base(base_model)
        if base_model not in self._blocks:
            module = self.store.get(base_model).module  # read only: counting parameters
            counts = block_param_counts(module)
            self._blocks[base_model] = {
                "base_model": base_model,
                "embedding_dim": int(getattr(module, "num_features", 0)),
                "blocks": [{"name": k, "num_params": v} for k, v in counts.items() if k != "classifier"],
                "total_params": sum(counts.values()),
            }
        return self._blocks[base_model]

    # --- submitting and cancelling ---------------------------------------------------------------
    def _check_base(self, base_model: str) -> None:
        spec = self.store.spec(base_model)
        status = self.store.weights_status(base_model)
        if not status.available:
            raise Conflict(
                f"base_model {base_model!r} has no weights here: {status.detail}", model=base_model
            )
        if spec.family != "timm":
            raise Conflict(
                f"base_model {base_model!r} ({spec.family}) cannot be fine-tuned; use efficientnet_lite0."
            )

    def submit(self, request: JobRequest) -> dict[str, Any]:
        dataset = self.datasets.get(request.dataset_id)
        self._check_base(request.base_model)
        info = self.blocks(request.base_model)
        blocks = [b["name"] for b in info["blocks"]]
        unknown = [b for b in request.trainable if b not in blocks]
        if unknown:
            raise InvalidParameter(f"trainable: unknown blocks {unknown}; choose from {blocks}.")
        if request.mode == "fine_tune" and not request.trainable:
            raise InvalidParameter(
                "trainable: fine_tune needs at least one block to unfreeze (e.g. ['head']); "
                "use mode feature_extractor to train the classifier alone."
            )
        if request.mode == "feature_extractor" and request.trainable:
            raise InvalidParameter(
                "trainable: must be empty in feature_extractor mode (the backbone is frozen)."
            )
        if len(dataset["items"]) > self.settings.finetune_max_images:
            raise InvalidParameter(
                f"dataset has {len(dataset['items'])} images; a job trains on at most "
                f"{self.settings.finetune_max_images} (CONVSCOPE_FINETUNE_MAX_IMAGES)."
            )
        check_classes([c["name"] for c in dataset["classes"]], [label for label, _ in dataset["items"]])
        job_id = uuid.uuid4().hex[:12]
        name = request.name or f"ft-{job_id[:6]}"
        if not NAME_PATTERN.match(name):
            raise InvalidParameter(
                f"name: {name!r} must be 1-48 of a-z, 0-9, '-', '_', starting with a letter or digit."
            )
        with self._lock:
            pending = {j["name"] for j in self._jobs.values() if j["status"] in ("queued", "running")}
            if name in self.store.names() or name in pending:
                raise Conflict(f"name: a model called {name!r} exists already; choose another name.")
            waiting = sum(1 for j in self._jobs.values() if j["status"] == "queued")
            if waiting >= self.settings.finetune_max_queued:
                raise Conflict(f"{waiting} jobs are waiting already; try again when one has finished.")
            doc: dict[str, Any] = {
                "job_id": job_id,
                "status": "queued",
                "created": time.time(),
                "started": None,
                "finished": None,
                "dataset_id": request.dataset_id,
                "dataset_name": dataset["name"],
                "base_model": request.base_model,
                "name": name,
                "mode": request.mode,
                "trainable": list(request.trainable),
                "epochs": request.epochs,
                "batch_size": request.batch_size,
                "lr": request.lr if request.lr is not None else DEFAULT_LR[request.mode],
                "val_split": request.val_split,
                "augment": request.augment,
                "seed": request.seed,
                "phase": "queued",
                "epoch": 0,
                "progress": 0.0,
                "eta_s": None,
                "history": [],
                # known before training: the new classifier plus the unfrozen blocks
                "trainable_params": (info["embedding_dim"] + 1) * len(dataset["classes"])
                + sum(b["num_params"] for b in info["blocks"] if b["name"] in request.trainable),
                "total_params": None,
                "error": None,
                "model": None,
                "evaluation": None,
                "cancel_requested": False,
            }
            self._jobs[job_id] = doc
            self._versions[job_id] = 1
            self.registry.put("jobs", doc)
        self._queue.put(job_id)
        return copy.deepcopy(doc)

    def cancel(self, job_id: str) -> dict[str, Any]:
        doc = self.get(job_id)
        if doc["status"] in TERMINAL:
            raise Conflict(
                f"job {job_id!r} is {doc['status']} already; only queued or running jobs can be cancelled."
            )
        with self._lock:
            live = self._jobs.get(job_id)
            if live is None:  # recorded by another server process sharing the data dir
                raise Conflict(f"job {job_id!r} is not run by this server process; cancel it where it runs.")
            if live["status"] == "queued":
                live.update(status="cancelled", finished=time.time(), phase="cancelled")
                self.registry.put("jobs", live)
            else:
                live["cancel_requested"] = True
                event = self._cancel.get(job_id)
                if event is not None:
                    event.set()
            self._versions[job_id] += 1
            return copy.deepcopy(live)

    # --- the runner ------------------------------------------------------------------------------
    def _update(self, job_id: str, persist: bool = False, **changes: Any) -> None:
        with self._lock:
            live = self._jobs[job_id]
            live.update(changes)
            self._versions[job_id] += 1
            if persist:
                self.registry.put("jobs", live)

    def _run_forever(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                if self._jobs[job_id]["status"] != "queued":
                    continue  # cancelled while waiting
            try:
                self._run(job_id)
            except Exception as exc:  # never let one job kill the runner
                log.exception("job %s failed", job_id)
                self._update(job_id, persist=True, status="failed", finished=time.time(), error=str(exc))

    def _run(self, job_id: str) -> None:
        doc = self.get(job_id)
        dataset = self.datasets.get(doc["dataset_id"])
        checkpoint = self.models.checkpoint_path(doc["name"])
        payload = {
            **{
                k: doc[k]
                for k in (
                    "job_id",
                    "base_model",
                    "name",
                    "mode",
                    "trainable",
                    "epochs",
                    "batch_size",
                    "lr",
                    "val_split",
                    "augment",
                    "seed",
                )
            },
            "items": dataset["items"],
            "classes": [c["name"] for c in dataset["classes"]],
            "dataset_dir": str(self.datasets.path(doc["dataset_id"])),
            "models_dir": str(self.settings.models_dir),
            "checkpoint": str(checkpoint),
            "device": str(self.store.device),
            "threads": self.settings.train_threads,
            "nice": self.settings.train_nice,
        }
        context = mp.get_context("spawn")  # a fresh interpreter: no copy of the API's threads or CUDA state
        messages = context.Queue()
        cancel = context.Event()
        self._cancel[job_id] = cancel
        if doc["cancel_requested"]:
            cancel.set()
        self._update(job_id, persist=True, status="running", started=time.time(), phase="starting")
        process = context.Process(target=run_job, args=(payload, messages, cancel), daemon=True)
        process.start()
        outcome: tuple[str, dict[str, Any]] | None = None
        try:
            while outcome is None:
                try:
                    kind, data = messages.get(timeout=0.5)
                except queue.Empty:
                    if not process.is_alive():
                        outcome = (
                            "error",
                            {"error": f"the training process exited with code {process.exitcode}"},
                        )
                    continue
                if kind == "progress":
                    self._update(
                        job_id,
                        persist=bool(data.get("history")) and data.get("step") == data.get("steps"),
                        **data,
                    )
                else:
                    outcome = (kind, data)
        finally:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            messages.close()
            self._cancel.pop(job_id, None)
        self._finish(job_id, *outcome)

    def _finish(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        now = time.time()
        if kind == "cancelled":
            if self.get(job_id)["cancel_requested"]:
                self._update(job_id, persist=True, status="cancelled", phase="cancelled", finished=now)
            else:  # stopped because the server is shutting down
                self._update(
                    job_id,
                    persist=True,
                    status="interrupted",
                    phase="interrupted",
                    finished=now,
                    error="the server stopped before this job finished; start it again.",
                )
            return
        if kind != "done":
            log.warning("job %s failed: %s", job_id, data.get("trace", data["error"]))
            status = "interrupted" if self._stopping.is_set() else "failed"
            self._update(job_id, persist=True, status=status, phase=status, finished=now, error=data["error"])
            return
        doc = self.get(job_id)
        dataset = self.datasets.get(doc["dataset_id"])
        evaluation = self.evaluation(data["evaluation"], dataset, data["val_items"])
        model = {
            "name": doc["name"],
            "created": now,
            "job_id": job_id,
            "base_model": doc["base_model"],
            "dataset_id": doc["dataset_id"],
            "dataset_name": doc["dataset_name"],
            "mode": doc["mode"],
            "trainable": doc["trainable"],
            "classes": [c["name"] for c in dataset["classes"]],
            "preprocessing": self.store.spec(doc["base_model"]).preprocessing.as_dict(),
            "history": data["history"],
            "evaluation": evaluation,
            "trainable_params": data["trainable_params"],
            "total_params": data["total_params"],
        }
        self.models.add(model)
        self._update(
            job_id,
            persist=True,
            status="succeeded",
            phase="done",
            finished=now,
            progress=1.0,
            eta_s=0.0,
            history=data["history"],
            trainable_params=data["trainable_params"],
            total_params=data["total_params"],
            model=doc["name"],
            evaluation=evaluation,
        )

    @staticmethod
    def evaluation(raw: dict[str, Any], dataset: dict[str, Any], val_items: list[int]) -> dict[str, Any]:
        """The worker's evaluation with class names and the misclassified validation images."""
        classes = [c["name"] for c in dataset["classes"]]
        truth = [dataset["items"][i][0] for i in val_items]
        misclassified = [
            {"index": item, "true": t, "predicted": p}
            for item, t, p in zip(val_items, truth, raw["predictions"], strict=True)
            if t != p
        ]
        return {
            "classes": classes,
            "accuracy": raw["accuracy"],
            "confusion": raw["confusion"],
            "per_class_accuracy": raw["per_class_accuracy"],
            "misclassified": misclassified,
            "val_count": len(val_items),
        }
