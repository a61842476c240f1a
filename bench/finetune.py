"""Transfer learning on scikit-learn's digits: quality, cached-embedding speed-up, API latency while training.

Prints, all measured in this run:
1. feature-extractor mode: the per-epoch time with cached embeddings (from epoch 2) vs the same head trained
   with a full forward pass every epoch (target >= 10x), and its validation accuracy (target >= 0.85);
2. fine-tune mode (last blocks unfrozen): validation accuracy (target >= 0.90) and wall time;
3. POST /api/classify p50 latency while a fine-tune job trains vs idle (target <= 2x).

    python bench/finetune.py [--per-class 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.transforms import v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cnn.models import efficientnet_lite0_spec  # noqa: E402
from app.cnn.training import TrainConfig, stratified_split, train, with_new_classifier  # noqa: E402
from app.services.datasets import demo_images  # noqa: E402


def digits_views(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    import io

    from PIL import Image

    spec = efficientnet_lite0_spec()
    demo = demo_images("digits", per_class)
    views = [
        T.functional.pil_to_tensor(spec.preprocessing.view(Image.open(io.BytesIO(raw)).convert("RGB")))
        for _, raw, _ in demo.items
    ]
    return torch.stack(views), torch.tensor([label for label, _, _ in demo.items])


def quality(per_class: int, threads: int) -> None:
    torch.set_num_threads(threads)
    spec = efficientnet_lite0_spec()
    base = spec.load(Path(tempfile.gettempdir()))
    views, labels = digits_views(per_class)
    tr, va = stratified_split(labels.tolist(), 0.2, seed=0)
    cpu = torch.device("cpu")
    print(f"digits: {len(tr)} train / {len(va)} val images, 10 classes, {threads} torch threads")

    def run(config: TrainConfig) -> tuple[float, list]:
        torch.manual_seed(0)
        model = with_new_classifier(copy.deepcopy(base), 10)
        start = time.perf_counter()
        result = train(model, views[tr], labels[tr], views[va], labels[va], config, cpu)
        return time.perf_counter() - start, result.history

    fe = TrainConfig(mode="feature_extractor", epochs=15, lr=1e-2, batch_size=32)
    wall, cached = run(fe)
    embed_s = wall - sum(h.seconds for h in cached)
    _, full = run(
        TrainConfig(mode="feature_extractor", epochs=2, lr=1e-2, batch_size=32, cache_embeddings=False)
    )
    cached_epoch = statistics.median(h.seconds for h in cached[1:])
    full_epoch = statistics.median(h.seconds for h in full)
    print("\n[feature extractor, frozen Lite0, 15 epochs]")
    print(f"  embeddings computed once: {embed_s:.1f} s; whole run {wall:.1f} s")
    print(f"  epoch time, cached embeddings (median of epochs 2..15): {cached_epoch * 1000:.1f} ms")
    print(f"  epoch time, full forward every epoch (baseline):        {full_epoch * 1000:.0f} ms")
    print(f"  speed-up from epoch 2: {full_epoch / cached_epoch:.0f}x (target >= 10x)")
    print(
        f"  val accuracy: {cached[-1].val_accuracy:.3f} (best {max(h.val_accuracy for h in cached):.3f}; "
        f"target >= 0.85)"
    )

    ft = TrainConfig(
        mode="fine_tune", trainable=("blocks.5", "blocks.6", "head"), epochs=4, lr=3e-3, batch_size=16
    )
    wall, history = run(ft)
    print("\n[fine-tune: blocks.5, blocks.6, head + new classifier, 4 epochs]")
    for h in history:
        print(
            f"  epoch {h.epoch}: train loss {h.train_loss:.3f}, val accuracy {h.val_accuracy:.3f}, "
            f"{h.seconds:.1f} s"
        )
    print(f"  val accuracy: {history[-1].val_accuracy:.3f} (target >= 0.90) in {wall:.0f} s of CPU wall time")


def latency(requests: int) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(data_dir=Path(tempfile.mkdtemp()), models_dir=Path(tempfile.mkdtemp()))
    with TestClient(create_app(settings)) as client:

        def p50() -> float:
            times = []
            for _ in range(requests):
                start = time.perf_counter()
                assert client.post("/api/classify", json={"sample": "cat"}).status_code == 200
                times.append(time.perf_counter() - start)
            return statistics.median(times) * 1000

        p50()  # warm up
        idle = p50()
        dataset = client.post("/api/datasets/demo", json={"name": "digits", "per_class": 30}).json()[
            "dataset_id"
        ]
        job = client.post(
            "/api/finetune",
            json={
                "dataset_id": dataset,
                "mode": "fine_tune",
                "trainable": ["blocks.6", "head"],
                "epochs": 50,
            },
        ).json()["job_id"]
        while client.get(f"/api/finetune/{job}").json()["phase"] != "training":
            time.sleep(0.2)
        busy = p50()
        status = client.get(f"/api/finetune/{job}").json()
        client.delete(f"/api/finetune/{job}")
    print(
        f"\n[POST /api/classify (Lite0, cat sample), {requests} requests each; training process: "
        f"{settings.train_threads} thread(s), nice {settings.train_nice}]"
    )
    print(
        f"  p50 idle: {idle:.0f} ms; p50 while a fine-tune job trains: {busy:.0f} ms "
        f"(job at epoch {status['epoch']}, {status['progress']:.1%} done)"
    )
    print(f"  ratio: {busy / idle:.2f}x (target <= 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    latency(args.requests)
    if not args.skip_quality:
        quality(args.per_class, args.threads)


if __name__ == "__main__":
    main()
