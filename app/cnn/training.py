"""Transfer learning in pure torch: blocks to unfreeze, cached embeddings, a fine-tune loop, evaluation.

Two modes share one head (the network's own classifier, reset to ``num_classes``):

* ``feature_extractor``: the backbone is frozen, so its embeddings are computed once and the head is trained
  on the cached vectors; every epoch after the first costs a tiny fraction of a forward pass.
* ``fine_tune``: the chosen blocks are unfrozen too. BatchNorm layers stay in eval mode (ImageNet running
  statistics; small batches would make poor estimates) while their affine weights train with their block;
  the backbone gets a lower learning rate than the new head.

Inputs are uint8 views ``(N, 3, H, W)``, as the model's preprocessing crops them; normalisation happens per
batch so that a dataset costs one byte per pixel in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2 as T

Mode = Literal["feature_extractor", "fine_tune"]


class TrainingCancelled(Exception):
    """Raised inside the loop when ``should_stop`` says so."""


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (a learning rate too high): the weights are useless."""


# --- the network's blocks --------------------------------------------------------------------------------


def block_prefixes(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Name -> parameter-name prefixes of each block that can be unfrozen, input side first.

    timm EfficientNet/MobileNet-style networks give ``stem``, ``blocks.0`` ... ``blocks.N`` and ``head``;
    other networks give their top-level children. The classifier is not listed: it always trains.
    """
    classifier = _classifier_name(model)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and hasattr(model, "conv_stem") and hasattr(model, "conv_head"):
        out: dict[str, tuple[str, ...]] = {"stem": ("conv_stem.", "bn1.")}
        out.update({f"blocks.{i}": (f"blocks.{i}.",) for i in range(len(blocks))})
        out["head"] = ("conv_head.", "bn2.")
        return out
    return {
        name: (f"{name}.",)
        for name, child in model.named_children()
        if name != classifier and any(True for _ in child.parameters())
    }


def _classifier_name(model: nn.Module) -> str:
    return str(getattr(model, "default_cfg", {}).get("classifier", "classifier"))


def block_param_counts(model: nn.Module) -> dict[str, int]:
    """Parameters in each block of :func:`block_prefixes`, plus ``classifier``."""
    prefixes = block_prefixes(model)
    counts = dict.fromkeys(prefixes, 0)
    counts["classifier"] = 0
    head = _classifier_name(model) + "."
    for name, param in model.named_parameters():
        if name.startswith(head):
            counts["classifier"] += param.numel()
            continue
        for block, starts in prefixes.items():
            if name.startswith(starts):
                counts[block] += param.numel()
                break
    return counts


def with_new_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """The network with a freshly initialised classifier of ``num_classes`` outputs (timm models)."""
    reset = getattr(model, "reset_classifier", None)
    if reset is None:
        raise TypeError(
            f"{type(model).__name__} has no reset_classifier(); transfer learning needs a timm model"
        )
    reset(num_classes)
    return model


def set_trainable(
    model: nn.Module, mode: Mode, trainable: Sequence[str]
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Freeze everything except the classifier and, in fine-tune mode, the named blocks.

    Returns:
        (head parameters, backbone parameters that train).
    """
    prefixes = block_prefixes(model)
    unknown = [b for b in trainable if b not in prefixes]
    if unknown:
        raise ValueError(f"unknown blocks {unknown}; choose from {list(prefixes)}")
    starts = tuple(p for b in (trainable if mode == "fine_tune" else ()) for p in prefixes[b])
    head_start = _classifier_name(model) + "."
    head: list[nn.Parameter] = []
    backbone: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if name.startswith(head_start):
            param.requires_grad_(True)
            head.append(param)
        elif starts and name.startswith(starts):
            param.requires_grad_(True)
            backbone.append(param)
        else:
            param.requires_grad_(False)
    return head, backbone


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features the classifier sees, ``(B, D)``."""
    features = model.forward_features(x)  # type: ignore[operator]  # (B, C, h, w)
    return model.forward_head(features, pre_logits=True)  # type: ignore[operator,no-any-return]  # (B, D)


# --- configuration and results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    mode: Mode
    trainable: tuple[str, ...] = ()  # blocks unfrozen in fine_tune mode
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3  # the head's; the backbone gets lr * backbone_lr_scale
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    augment: bool = False  # random resized crops; fine_tune only (cached embeddings cannot be augmented)
    seed: int = 0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    cache_embeddings: bool = True  # False trains the frozen-backbone head with a full forward every epoch


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class Progress:
    epoch: int  # 1-based, the epoch in progress
    epochs: int
    step: int  # batches done in this epoch
    steps: int
    fraction: float  # of the whole run, 0..1
    eta_s: float | None
    history: list[EpochStats]


@dataclass
class Evaluation:
    accuracy: float
    confusion: list[list[int]]  # [true][predicted]
    per_class_accuracy: list[float | None]  # None for a class with no validation image
    predictions: list[int]  # predicted class of each validation item, in order

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    evaluation: Evaluation | None = None
    trainable_params: int = 0


# --- the loop --------------------------------------------------------------------------------------------


def _normalise(x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    x = x.to(torch.float32).div_(255.0)  # (B, 3, H, W)
    return T.functional.normalize(x, list(config.mean), list(config.std))


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.inference_mode()
def compute_embeddings(
    model: nn.Module,
    views: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Embeddings ``(N, D)`` of uint8 views ``(N, 3, H, W)``, in batches; ``on_batch(done, total)``."""
    model.eval()
    chunks = _batches(len(views), config.batch_size, None)
    out = []
    for i, idx in enumerate(chunks):
        out.append(embed(model, _normalise(views[idx], config).to(device)).float().cpu())  # (b, D)
        if on_batch:
            on_batch(i + 1, len(chunks))
    return torch.cat(out)  # (N, D)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Evaluation:
    """Accuracy, confusion matrix ``[true][predicted]`` and per-class accuracy of ``(N, K)`` logits."""
    predicted = logits.argmax(dim=1)  # (N,)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    totals = confusion.sum(dim=1)
    per_class = [
        (float(confusion[c, c]) / float(totals[c])) if totals[c] > 0 else None for c in range(num_classes)
    ]
    accuracy = float((predicted == labels).float().mean()) if len(labels) else 0.0
    return Evaluation(accuracy, confusion.tolist(), per_class, predicted.tolist())


def train(
    model: nn.Module,
    train_views: torch.Tensor,
    train_labels: torch.Tensor,
    val_views: torch.Tensor,
    val_labels: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``model`` (whose classifier already has ``num_classes`` outputs) in place.

    Args:
        model: a timm network with a new classifier, on ``device``.
        train_views, val_views: uint8 crops ``(N, 3, H, W)`` as the model's preprocessing makes them.
        train_labels, val_labels: class indices ``(N,)``.
        config: mode, blocks, epochs, learning rate, seed.
        device: where to compute.
        on_progress: called after every batch.
        should_stop: polled after every batch; True raises :class:`TrainingCancelled`.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    num_classes = int(model.get_classifier().out_features)  # type: ignore[operator,union-attr]
    head_params, backbone_params = set_trainable(model, config.mode, config.trainable)
    result = TrainResult(trainable_params=sum(p.numel() for p in head_params + backbone_params))
    groups: list[dict[str, object]] = [{"params": head_params, "lr": config.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": config.lr * config.backbone_lr_scale})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)  # type: ignore[arg-type]
    head = model.get_classifier()  # type: ignore[operator]
    cached = config.mode == "feature_extractor" and config.cache_embeddings
    augment = T.RandomResizedCrop(train_views.shape[-1], scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True)

    steps_per_epoch = math.ceil(len(train_views) / config.batch_size)
    embed_steps = math.ceil(len(train_views) / config.batch_size) + math.ceil(
        len(val_views) / config.batch_size
    )
    total_steps = config.epochs * steps_per_epoch + (embed_steps if cached else 0)
    done_steps = 0
    started = time.perf_counter()

    def report(epoch: int, step: int, steps: int) -> None:
        if should_stop is not None and should_stop():
            raise TrainingCancelled
        if on_progress is None:
            return
        fraction = min(1.0, done_steps / total_steps)
        elapsed = time.perf_counter() - started
        eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
        on_progress(Progress(epoch, config.epochs, step, steps, fraction, eta, list(result.history)))

    train_x: torch.Tensor = train_views
    val_x: torch.Tensor = val_views
    if cached:

        def on_embed(done: int, total: int) -> None:
            nonlocal done_steps
            done_steps += 1
            report(1, 0, steps_per_epoch)

        train_x = compute_embeddings(model, train_views, config, device, on_embed)  # (N, D)
        val_x = compute_embeddings(model, val_views, config, device, on_embed)  # (M, D)

    def forward(x: torch.Tensor, training: bool) -> torch.Tensor:
        if cached:
            return head(x.to(device))  # type: ignore[no-any-return]  # (b, K)
        batch = x
        if training and config.augment and config.mode == "fine_tune":
            batch = torch.stack([augment(img) for img in batch])
        return model(_normalise(batch, config).to(device))  # type: ignore[no-any-return]  # (b, K)

    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.eval()  # BatchNorm keeps ImageNet statistics; dropout off: small data, deterministic
        loss_sum, correct = 0.0, 0
        for step, idx in enumerate(_batches(len(train_x), config.batch_size, generator), start=1):
            labels = train_labels[idx].to(device)
            logits = forward(train_x[idx], training=True)  # (b, K)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels).sum())
            done_steps += 1
            report(epoch, step, steps_per_epoch)
        val_logits = predict_logits(forward, val_x, config.batch_size)
        val_loss = float(F.cross_entropy(val_logits, val_labels)) if len(val_labels) else 0.0
        if not (math.isfinite(loss_sum) and math.isfinite(val_loss)):
            raise TrainingDiverged(
                f"the loss became {loss_sum / len(train_x)} in epoch {epoch}: lower lr (was {config.lr:g})."
            )
        evaluation = evaluate_logits(val_logits, val_labels, num_classes)
        result.history.append(
            EpochStats(
                epoch,
                loss_sum / len(train_x),
                correct / len(train_x),
                val_loss,
                evaluation.accuracy,
                time.perf_counter() - epoch_start,
            )
        )
        result.evaluation = evaluation
        report(epoch, steps_per_epoch, steps_per_epoch)
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()
    return result


@torch.inference_mode()
def predict_logits(
    forward: Callable[[torch.Tensor, bool], torch.Tensor], x: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Logits ``(N, K)`` of ``forward`` over ``x`` in batches, on the CPU."""
    return torch.cat([forward(x[idx], False).float().cpu() for idx in _batches(len(x), batch_size, None)])


def stratified_split(labels: Sequence[int], val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): per class ``round(n * val_split)`` clamped to ``1..n-1`` go to validation."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for members in by_class.values():
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        n_val = min(max(1, round(len(members) * val_split)), len(members) - 1)
        val_idx += order[:n_val]
        train_idx += order[n_val:]
    return sorted(train_idx), sorted(val_idx)
