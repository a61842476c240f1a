"""Fine-tune jobs (``/api/finetune``) and the models they make (``/api/finetuned``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import JobManagerDep, SettingsDep, TrainedModelsDep
from app.services.jobs import TERMINAL, JobManager, JobRequest

router = APIRouter(tags=["transfer learning"])

SSE_POLL_S = 0.2
SSE_KEEPALIVE_S = 15.0


class FinetuneRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # 'NaN' is no learning rate: say so, not 'must be <= 1'

    dataset_id: str = Field(max_length=64, description="from POST /api/datasets or /api/datasets/demo")
    base_model: str = Field(
        "efficientnet_lite0", max_length=64, description="a timm model of GET /api/models"
    )
    mode: Literal["feature_extractor", "fine_tune"] = "feature_extractor"
    trainable: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="fine_tune: blocks to unfreeze, from GET /api/finetune/blocks: ['blocks.6', 'head']",
    )
    epochs: int = Field(10, ge=1, le=100)
    batch_size: int = Field(16, ge=1, le=256)
    lr: float | None = Field(
        None, gt=0, le=1, description="the head's; default 1e-2 (feature_extractor), 1e-3"
    )
    val_split: float = Field(0.2, ge=0.05, le=0.5, description="share of each class held out for validation")
    augment: bool = Field(False, description="random resized crops while fine-tuning")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    name: str | None = Field(None, max_length=48, description="the new model's name; a-z, 0-9, '-', '_'")


class EpochOut(BaseModel):
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


class Misclassified(BaseModel):
    index: int  # the image's index in its dataset: GET /api/datasets/{id}/images/{index}
    true: int
    predicted: int


class EvaluationOut(BaseModel):
    classes: list[str]
    accuracy: float
    confusion: list[list[int]]  # [true][predicted], validation images
    per_class_accuracy: list[float | None]
    misclassified: list[Misclassified]
    val_count: int


class JobOut(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    phase: str
    name: str
    dataset_id: str
    base_model: str
    mode: str
    trainable: list[str]
    epochs: int
    batch_size: int
    lr: float
    val_split: float
    augment: bool
    seed: int
    created: float
    started: float | None
    finished: float | None
    epoch: int
    progress: float  # 0..1 of the whole job
    eta_s: float | None
    history: list[EpochOut]
    trainable_params: int | None
    total_params: int | None
    cancel_requested: bool
    error: str | None
    model: str | None  # the registered model, once succeeded
    evaluation: EvaluationOut | None


class JobCreated(BaseModel):
    job_id: str
    status: str


class BlockOut(BaseModel):
    name: str
    num_params: int


class BlocksOut(BaseModel):
    base_model: str
    embedding_dim: int  # the classifier has (embedding_dim + 1) * num_classes parameters
    total_params: int
    blocks: list[BlockOut]


class TrainedModelOut(BaseModel):
    name: str
    created: float
    job_id: str
    base_model: str
    dataset_id: str
    dataset_name: str
    mode: str
    trainable: list[str]
    classes: list[str]
    preprocessing: dict[str, Any]
    history: list[EpochOut]
    evaluation: EvaluationOut
    trainable_params: int
    total_params: int
    downloads: dict[str, str]


def job_out(doc: dict[str, Any]) -> JobOut:
    return JobOut.model_validate(doc)


def model_out(doc: dict[str, Any]) -> TrainedModelOut:
    base = f"/api/finetuned/{doc['name']}"
    return TrainedModelOut.model_validate(
        {**doc, "downloads": {k: f"{base}/{k}" for k in ("checkpoint", "torchscript", "onnx")}}
    )


@router.get("/finetune/blocks", response_model=BlocksOut)
def read_blocks(
    jobs: JobManagerDep, settings: SettingsDep, base_model: Annotated[str | None, Query(max_length=64)] = None
) -> BlocksOut:
    """The base network's blocks that fine_tune mode can unfreeze, input side first, with parameter counts."""
    return BlocksOut.model_validate(jobs.blocks(base_model or settings.default_model))


@router.post("/finetune", status_code=202, response_model=JobCreated, responses={404: {}, 409: {}})
def create_finetune_job(body: FinetuneRequest, jobs: JobManagerDep) -> JobCreated:
    """Queue a job: train a new classifier (and chosen blocks) on a dataset. Poll it or follow its events."""
    doc = jobs.submit(JobRequest(**{**body.model_dump(), "trainable": tuple(body.trainable)}))
    return JobCreated(job_id=doc["job_id"], status=doc["status"])


@router.get("/finetune", response_model=list[JobOut])
def read_finetune_jobs(jobs: JobManagerDep) -> list[JobOut]:
    return [job_out(d) for d in jobs.all()]


@router.get("/finetune/{job_id}", response_model=JobOut)
def read_finetune_job(job_id: str, jobs: JobManagerDep) -> JobOut:
    """Status, epoch, progress, ETA, per-epoch losses and accuracies; the evaluation once it succeeded."""
    return job_out(jobs.get(job_id))


async def job_events(jobs: JobManager, job_id: str) -> AsyncIterator[str]:
    last_version, last_sent = -1, time.monotonic()
    while True:
        version = jobs.version(job_id)
        if version != last_version:
            last_version, last_sent = version, time.monotonic()
            doc = job_out(jobs.get(job_id))
            yield f"event: progress\nid: {version}\ndata: {doc.model_dump_json()}\n\n"
            if doc.status in TERMINAL:
                yield f"event: end\ndata: {json.dumps({'status': doc.status})}\n\n"
                return
        elif time.monotonic() - last_sent > SSE_KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_S)


@router.get(
    "/finetune/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events, then 'end'"}},
)
def read_finetune_events(job_id: str, jobs: JobManagerDep) -> StreamingResponse:
    """Server-Sent Events: a ``progress`` event (the job, as GET returns it) on every change, then ``end``."""
    jobs.get(job_id)  # an unknown job is a 404, not an empty stream
    return StreamingResponse(
        job_events(jobs, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete("/finetune/{job_id}", response_model=JobOut, responses={409: {}})
def delete_finetune_job(job_id: str, jobs: JobManagerDep) -> JobOut:
    """Cancel a queued or running job (a running one stops after its current batch); 409 once finished."""
    return job_out(jobs.cancel(job_id))


@router.get("/finetuned", response_model=list[TrainedModelOut])
def read_trained_models(models: TrainedModelsDep) -> list[TrainedModelOut]:
    return [model_out(d) for d in models.all()]


@router.get("/finetuned/{name}", response_model=TrainedModelOut)
def read_trained_model(name: str, models: TrainedModelsDep) -> TrainedModelOut:
    """A fine-tuned model: classes, metrics, confusion matrix, misclassified validation images, downloads."""
    return model_out(models.get(name))


@router.get(
    "/finetuned/{name}/checkpoint",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def read_trained_model_checkpoint(name: str, models: TrainedModelsDep) -> FileResponse:
    """The PyTorch checkpoint: ``{"state_dict", "meta"}`` (``torch.load(f, weights_only=True)``)."""
    return FileResponse(models.checkpoint(name), media_type="application/octet-stream", filename=f"{name}.pt")


@router.get(
    "/finetuned/{name}/torchscript",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def read_trained_model_torchscript(name: str, models: TrainedModelsDep) -> FileResponse:
    """The model traced to TorchScript (``torch.jit.load``); input ``(B, 3, 224, 224)`` normalised."""
    return FileResponse(
        models.torchscript(name), media_type="application/octet-stream", filename=f"{name}.torchscript.pt"
    )


@router.get(
    "/finetuned/{name}/onnx",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 409: {}},
)
def read_trained_model_onnx(name: str, models: TrainedModelsDep) -> FileResponse:
    """The model as ONNX (opset of torch's TorchScript exporter): input ``input``, output ``logits``."""
    return FileResponse(models.onnx(name), media_type="application/octet-stream", filename=f"{name}.onnx")


@router.delete("/finetuned/{name}", status_code=204)
def delete_trained_model(name: str, models: TrainedModelsDep) -> Response:
    """Remove the model from the zoo, the registry and the disk."""
    models.delete(name)
    return Response(status_code=204)
