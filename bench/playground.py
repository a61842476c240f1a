"""Playground speed: the engine against the fastest plain-torch call for the same result, the full HTTP
request against engine compute, and the picture formats. Run from the repo root:
``python bench/playground.py [--threads N]``.

Every figure is the best of several runs (the machine may be shared), measured side by side in this run.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cnn import conv  # noqa: E402
from app.core.config import REPO_ROOT, Settings  # noqa: E402
from app.main import create_app  # noqa: E402

SIZES = (512, 1024, 2048)


def best_ms(fn: Callable[[], object], repeat: int) -> float:  # for one call alone
    fn()  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def photo(size: int) -> np.ndarray:
    image = Image.open(REPO_ROOT / "static" / "samples" / "astronaut.jpg").convert("RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))  # (H, W, 3) uint8


def baselines(x_cl: torch.Tensor, layer: conv.Layer) -> dict[str, Callable[[], object]]:
    """Plain-torch calls giving the same result, each timed from a ready input tensor."""
    x_nchw = x_cl.contiguous()  # (1, 3, H, W), default layout
    if isinstance(layer, conv.PoolLayer):
        k, s = layer.kernel_size, layer.resolved_stride
        return {
            "max_pool2d channels_last": lambda: F.max_pool2d(x_cl, k, s),
            "max_pool2d contiguous": lambda: F.max_pool2d(x_nchw, k, s),
        }
    assert isinstance(layer, conv.ConvLayer)
    kh, kw = layer.kernel_size
    p, s = (kh // 2, kw // 2), layer.stride
    w = layer.kernel.expand(3, 1, kh, kw).contiguous()  # (3, 1, kh, kw)
    dense = torch.zeros(3, 3, kh, kw)  # block-diagonal: the same per-channel result from a dense conv
    for c in range(3):
        dense[c, c] = layer.kernel
    x_batch = x_nchw.view(3, 1, *x_nchw.shape[2:])  # channels as a batch of grey images
    return {
        "depthwise channels_last": lambda: F.conv2d(x_cl, w, None, s, p, 1, 3),
        "depthwise contiguous": lambda: F.conv2d(x_nchw, w, None, s, p, 1, 3),
        "dense block-diag channels_last": lambda: F.conv2d(x_cl, dense, None, s, p),
        "channels as batch": lambda: F.conv2d(x_batch, layer.kernel[None, None], None, s, p),
    }


def interleaved_best_ms(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best time of each call, the calls taking turns round by round (and each leading a round in turn, as
    the first call after another one meets colder caches) so that a shared machine's load falls alike."""
    for fn in fns.values():
        fn()  # warm-up: oneDNN picks its kernels on the first call
    best = dict.fromkeys(fns, float("inf"))
    calls = list(fns.items())
    for r in range(rounds):
        for name, fn in calls[r % len(calls):] + calls[: r % len(calls)]:  # each goes first in turn
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: t * 1000 for name, t in best.items()}


def engine_table() -> None:
    print("== engine vs the fastest plain-torch call for the same result (best of n, interleaved, ms) ==")
    print(f"{'image':>6} {'layer':<16} {'engine':>8} {'fastest':>8} {'ratio':>6}  fastest call; others")
    for size in SIZES:
        x = conv.image_tensor(photo(size))  # (1, 3, H, W), channels_last
        rounds = {512: 200, 1024: 40, 2048: 8}[size]  # short calls need more rounds to find their best
        cases: list[tuple[str, conv.Layer]] = [
            (f"conv {k}x{k} s{s}", conv.conv_layer([[1.0 / (k * k)] * k] * k, stride=s, padding=k // 2))
            for k in (3, 7) for s in (1, 2)
        ] + [("max pool 2x2 s2", conv.PoolLayer("max", (2, 2)))]
        for name, layer in cases:
            plans = conv.plan([layer], (3, size, size), 10**9)
            with torch.inference_mode():
                calls = {"engine": lambda x=x, layer=layer, plans=plans: conv.run(x, [layer], plans),
                         **baselines(x, layer)}
                times = interleaved_best_ms(calls, rounds)
            engine = times.pop("engine")
            fastest = min(times, key=times.__getitem__)
            rest = ", ".join(f"{k} {v:.1f}" for k, v in times.items() if k != fastest)
            print(f"{size:>5}² {name:<16} {engine:8.2f} {times[fastest]:8.2f} {engine / times[fastest]:6.2f}"
                  f"  {fastest}; {rest}")


def http_table() -> None:
    print("\n== full HTTP request vs engine compute (best of n, ms; one layer, render clip, format auto) ==")
    print(f"{'image':>6} {'layer':<12} {'request':>8} {'compute':>8} {'ratio':>6}  split: prepare / compute"
          " / render+stats / encode / HTTP+JSON")
    threads = torch.get_num_threads()
    settings = Settings(preload=False, data_dir=Path("/tmp/convscope-bench"), torch_threads=threads)
    with TestClient(create_app(settings)) as client:
        for size in SIZES:
            buffer = io.BytesIO()
            Image.fromarray(photo(size)).save(buffer, format="JPEG", quality=95)
            created = client.post("/api/images", files={"file": ("p.jpg", buffer.getvalue())}).json()
            image_id = created["image_id"]
            for name, layer in (("conv 3x3", {"type": "conv", "preset": "box_blur", "padding": 1}),
                                ("conv 7x7 s2", {"type": "conv", "kernel": [[1 / 49] * 7] * 7, "stride": 2,
                                                 "padding": 3}),
                                ("max pool 2", {"type": "pool", "mode": "max", "kernel_size": 2})):
                body = {"image_id": image_id, "max_side": size, "layers": [layer]}
                best: tuple[float, dict[str, float]] | None = None
                for _ in range(3 if size == 2048 else 6):
                    start = time.perf_counter()
                    response = client.post("/api/convolve", json=body)
                    wall = (time.perf_counter() - start) * 1000
                    assert response.status_code == 200, response.text
                    if best is None or wall < best[0]:
                        best = (wall, response.json()["timings_ms"])
                assert best is not None
                wall, t = best
                print(f"{size:>5}² {name:<12} {wall:8.1f} {t['compute']:8.2f} {wall / t['compute']:6.1f}  "
                      f"{t['prepare']:.1f} / {t['compute']:.1f} / {t['render']:.1f} / {t['encode']:.1f} / "
                      f"{wall - t['total']:.1f}")


def format_table() -> None:
    print("\n== picture formats for a 1024² RGB output (best of 3) ==")
    x = conv.image_tensor(photo(1024))
    for name, layer in (("blur", conv.conv_layer("gaussian_3", padding=1)),
                        ("edges", conv.conv_layer("sobel_x", padding=1))):
        picture = conv.render(conv.run(x, [layer], conv.plan([layer], (3, 1024, 1024), 10**9))[0], "abs")
        image = Image.fromarray(picture)
        results = {}
        for fmt, params in (("PNG level 0", ("PNG", {"compress_level": 0})),
                            ("PNG level 1", ("PNG", {"compress_level": 1})),
                            ("PNG level 6", ("PNG", {"compress_level": 6})),
                            ("JPEG q90", ("JPEG", {"quality": 90})),
                            ("WebP q80 m0", ("WEBP", {"quality": 80, "method": 0}))):
            buffer = io.BytesIO()

            def save(buffer: io.BytesIO = buffer, params: tuple = params, image: Image.Image = image) -> None:
                buffer.seek(0)
                buffer.truncate()
                image.save(buffer, format=params[0], **params[1])

            results[fmt] = (best_ms(save, 3), len(buffer.getvalue()) / 1000)
        base = results["PNG level 1"][0]
        print(f"{name}: " + "; ".join(f"{k} {ms:.1f} ms ({ms / base:.2f}× PNG-1) {kb:.0f} kB"
                                      for k, (ms, kb) in results.items()))


if __name__ == "__main__":
    # --threads N: torch threads (default: one per core, as the app); on a shared machine 1 is steadier
    arg = sys.argv.index("--threads") + 1 if "--threads" in sys.argv else 0
    torch.set_num_threads(int(sys.argv[arg]) if arg else os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    engine_table()
    http_table()
    format_table()
