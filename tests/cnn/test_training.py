"""Transfer learning in pure torch, on a randomly initialised Lite0 and small inputs (fast, offline)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from app.cnn.training import (
    TrainConfig,
    TrainingCancelled,
    TrainingDiverged,
    block_param_counts,
    block_prefixes,
    evaluate_logits,
    set_trainable,
    stratified_split,
    train,
    with_new_classifier,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def base() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


@pytest.fixture
def model(base: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    return with_new_classifier(copy.deepcopy(base), 3)


def tiny_data(n_per_class: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes that differ by which colour channel is bright: learnable in a few steps."""
    generator = torch.Generator().manual_seed(0)
    views, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            x = torch.randint(0, 60, (3, size, size), generator=generator, dtype=torch.uint8)
            x[label] += 180
            views.append(x)
            labels.append(label)
    return torch.stack(views), torch.tensor(labels)


def test_blocks_partition_every_parameter(base: torch.nn.Module) -> None:
    names = list(block_prefixes(base))
    assert names == ["stem", *(f"blocks.{i}" for i in range(7)), "head"]
    counts = block_param_counts(base)
    assert sum(counts.values()) == sum(p.numel() for p in base.parameters())
    assert counts["classifier"] == 1280 * 1000 + 1000
    assert counts["blocks.6"] == 605_440


def test_set_trainable_freezes_all_but_head_and_chosen_blocks(model: torch.nn.Module) -> None:
    head, backbone = set_trainable(model, "fine_tune", ["blocks.6", "head"])
    counts = block_param_counts(model)
    assert sum(p.numel() for p in head) == counts["classifier"] == 1280 * 3 + 3
    assert sum(p.numel() for p in backbone) == counts["blocks.6"] + counts["head"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("blocks.6.", "conv_head.", "bn2.", "classifier.")) for n in trainable)
    with pytest.raises(ValueError, match="unknown blocks"):
        set_trainable(model, "fine_tune", ["blocks.9"])


def test_feature_extractor_trains_only_the_head_and_is_deterministic(model: torch.nn.Module) -> None:
    views, labels = tiny_data()
    before = copy.deepcopy(model.state_dict())
    twin = copy.deepcopy(model)
    config = TrainConfig(mode="feature_extractor", epochs=3, batch_size=4, lr=1e-2, seed=7)
    result = train(model, views, labels, views[::2], labels[::2], config, CPU)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert len(result.history) == 3
    assert all(torch.isfinite(torch.tensor(h.train_loss)) for h in result.history)
    assert result.trainable_params == 1280 * 3 + 3
    assert result.evaluation is not None and len(result.evaluation.predictions) == 6
    # the same seed gives the same head
    train(twin, views, labels, views[::2], labels[::2], config, CPU)
    assert torch.equal(twin.classifier.weight, model.classifier.weight)


def test_fine_tune_updates_chosen_block_and_keeps_batchnorm_statistics(model: torch.nn.Module) -> None:
    views, labels = tiny_data()
    before = copy.deepcopy(model.state_dict())
    config = TrainConfig(
        mode="fine_tune", trainable=("blocks.6",), epochs=1, batch_size=6, lr=1e-2, augment=True
    )
    result = train(model, views, labels, views[:3], labels[:3], config, CPU)
    after = model.state_dict()
    changed = {
        k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("blocks") else "")
        for k in before
        if not torch.equal(before[k], after[k])
    }
    assert changed == {"blocks.6", "classifier"}
    assert all(torch.equal(before[k], after[k]) for k in before if "running_" in k)
    assert torch.isfinite(torch.tensor(result.history[0].train_loss))
    assert result.trainable_params == block_param_counts(model)["blocks.6"] + 1280 * 3 + 3


def test_cancel_stops_after_a_batch(model: torch.nn.Module) -> None:
    views, labels = tiny_data()
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    config = TrainConfig(mode="fine_tune", trainable=("head",), epochs=5, batch_size=2)
    with pytest.raises(TrainingCancelled):
        train(model, views, labels, views[:3], labels[:3], config, CPU, should_stop=should_stop)
    assert len(calls) == 2


def test_evaluate_logits_confusion_matrix() -> None:
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 1, 1, 2])
    evaluation = evaluate_logits(logits, labels, 4)
    assert evaluation.as_dict() == {
        "accuracy": 0.75,
        "confusion": [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
        "per_class_accuracy": [1.0, 0.5, 1.0, None],
        "predictions": [0, 1, 0, 2],
    }


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    labels = [0] * 10 + [1] * 2 + [2] * 5
    train_idx, val_idx = stratified_split(labels, 0.2, seed=3)
    assert sorted(train_idx + val_idx) == list(range(17))
    assert [sum(1 for i in val_idx if labels[i] == c) for c in range(3)] == [2, 1, 1]
    assert stratified_split(labels, 0.2, seed=3) == (train_idx, val_idx)
    assert stratified_split(labels, 0.2, seed=4) != (train_idx, val_idx)


def test_a_diverging_run_is_reported(model: torch.nn.Module) -> None:
    views, labels = tiny_data()
    config = TrainConfig(mode="feature_extractor", epochs=2, batch_size=12)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("inf")  # what an exploding learning rate leaves behind
    with pytest.raises(TrainingDiverged, match="lower lr"):
        train(model, views, labels, views[:3], labels[:3], config, CPU)
