"""Why the network chose a class: Grad-CAM, Grad-CAM++, gradient saliency (with SmoothGrad) and occlusion.

Compact implementations of the published formulas (Selvaraju et al. 2017; Chattopadhay et al. 2018, as in
jacobgil/pytorch-grad-cam; Simonyan et al. 2014; Smilkov et al. 2017; Zeiler & Fergus 2014). They never
change the model: gradients come from ``torch.autograd.grad`` with respect to the input or to one captured
activation, so no ``.grad`` is written to the shared parameters, and the one forward hook used is removed
on exit and ignores other threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

METHODS = ("gradcam", "gradcam++", "saliency", "occlusion")


@dataclass(frozen=True)
class Explanation:
    method: str
    target: int
    heat: torch.Tensor  # (h, w) in [0, 1] at the method's own resolution (a CAM: the layer's H x W)
    probability: float  # softmax probability of the target class
    logit: float


@contextmanager
def capture_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the module's output tensors from this thread's forward passes; the hook is always removed."""
    captured: list[torch.Tensor] = []
    thread = threading.get_ident()

    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if threading.get_ident() == thread and isinstance(output, torch.Tensor):
            captured.append(output)

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _normalise(heat: torch.Tensor) -> torch.Tensor:
    heat = heat.float().clamp_min(0)
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def _check_target(logits: torch.Tensor, target: int) -> None:
    if not 0 <= target < logits.shape[1]:
        raise ValueError(f"target must be a class index in 0..{logits.shape[1] - 1}, got {target}.")


def grad_cam(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int, plus: bool = False
) -> Explanation:
    """Grad-CAM (Grad-CAM++ with ``plus``) of class ``target`` at ``layer`` for one input ``(1, 3, H, W)``."""
    with capture_output(layer) as captured, torch.enable_grad():
        logits = model(x.detach().clone().requires_grad_(True))  # (1, num_classes)
        _check_target(logits, target)
        if not captured or captured[0].dim() != 4:
            raise ValueError("the layer gave no (C, H, W) output to weigh.")
        activation = captured[0]  # (1, C, h, w)
        (grads,) = torch.autograd.grad(logits[0, target], activation)
    a, g = activation.detach()[0].float(), grads[0].float()  # (C, h, w)
    if plus:
        g2, g3 = g.pow(2), g.pow(3)
        sum_a = a.sum(dim=(1, 2), keepdim=True)  # (C, 1, 1)
        alpha = (g2 / (2 * g2 + sum_a * g3 + 1e-7)).where(g != 0, torch.zeros_like(g))
        weights = (alpha * g.clamp_min(0)).sum(dim=(1, 2))  # (C,)
    else:
        weights = g.mean(dim=(1, 2))  # (C,)
    cam = (weights[:, None, None] * a).sum(0).cpu()  # (h, w)
    probability = logits.detach()[0].float().softmax(0)[target]
    name = "gradcam++" if plus else "gradcam"
    return Explanation(name, target, _normalise(cam), float(probability), float(logits.detach()[0, target]))


def saliency(
    model: nn.Module, x: torch.Tensor, target: int, samples: int = 1, noise: float = 0.15, batch: int = 8
) -> Explanation:
    """|d score / d pixel|, max over colour channels; with ``samples`` > 1, averaged over noisy copies.

    Args:
        samples: 1 is plain gradient saliency; more is SmoothGrad with that many noisy copies.
        noise: SmoothGrad's noise standard deviation as a fraction of the input's value range.
    """
    sigma = noise * float(x.max() - x.min())
    total = torch.zeros(x.shape[-2:])  # (H, W)
    generator = torch.Generator().manual_seed(0)  # the same picture for the same request
    logit = probability = 0.0
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        copies = x.detach().expand(n, -1, -1, -1).clone()  # (n, 3, H, W)
        if samples > 1:
            copies += sigma * torch.randn(copies.shape, generator=generator).to(copies.device)
        copies = copies.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.enable_grad():
            logits = model(copies)  # (n, num_classes)
            _check_target(logits, target)
            (grads,) = torch.autograd.grad(logits[:, target].sum(), copies)
        total += grads.detach().abs().amax(dim=1).sum(0).float().cpu()
        if done == 0:
            with torch.inference_mode():
                clean = model(x)[0].float()  # (num_classes,)
            logit, probability = float(clean[target]), float(clean.softmax(0)[target])
        done += n
    method = "smoothgrad" if samples > 1 else "saliency"
    return Explanation(method, target, _normalise(total / samples), probability, logit)


def occlusion_positions(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis, the last one flush with the edge so every pixel is covered."""
    positions = list(range(0, max(size - window, 0) + 1, stride))
    if positions[-1] + window < size:
        positions.append(size - window)
    return positions


@torch.inference_mode()
def occlusion(
    model: nn.Module, x: torch.Tensor, target: int, window: int = 56, stride: int = 28, batch: int = 16
) -> Explanation:
    """How much the target's probability drops when a grey square hides each region (input ``(1, 3, H, W)``).

    The square is filled with 0, the dataset mean after normalisation. The heat at a pixel is the mean drop
    over the windows covering it; rises in probability count as zero.
    """
    height, width = x.shape[-2:]
    logits = model(x)  # (1, num_classes)
    _check_target(logits, target)
    base = float(logits[0].float().softmax(0)[target])
    boxes = [(top, left) for top in occlusion_positions(height, window, stride)
             for left in occlusion_positions(width, window, stride)]
    drops: list[float] = []
    for first in range(0, len(boxes), batch):
        chunk = boxes[first : first + batch]
        copies = x.expand(len(chunk), -1, -1, -1).clone()  # (n, 3, H, W)
        for i, (top, left) in enumerate(chunk):
            copies[i, :, top : top + window, left : left + window] = 0
        probs = model(copies.contiguous(memory_format=torch.channels_last)).float().softmax(1)[:, target]
        drops.extend((base - probs).clamp_min(0).cpu().tolist())
    heat = torch.zeros(height, width)
    count = torch.zeros(height, width)
    for (top, left), drop in zip(boxes, drops, strict=True):
        heat[top : top + window, left : left + window] += drop
        count[top : top + window, left : left + window] += 1
    heat = _normalise(heat / count.clamp_min(1))
    return Explanation("occlusion", target, heat, base, float(logits[0, target]))
