"""Classification: a batch of images through a network, softmax, the top-k classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Prediction:
    index: int  # class index in the model's categories
    label: str
    probability: float


@torch.inference_mode()
def predict_proba(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``(B, num_classes)`` for a normalised batch ``(B, 3, H, W)``."""
    logits = model(batch)  # (B, num_classes)
    return logits.float().softmax(dim=1)


def top_k(probabilities: torch.Tensor, categories: Sequence[str], k: int) -> list[list[Prediction]]:
    """The ``k`` most probable classes of each row; ``k`` is clamped to ``1..num_classes``."""
    k = max(1, min(k, probabilities.shape[1]))
    values, indices = probabilities.topk(k, dim=1)  # (B, k)
    return [
        [Prediction(int(i), categories[int(i)], float(p)) for p, i in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(values.cpu(), indices.cpu(), strict=True)
    ]
