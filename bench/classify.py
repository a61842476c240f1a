"""Classification speed, measured in one run on the same photo (static/samples/cat.jpg).

Prints, with the in-process pipeline (decode + preprocess + forward) as the baseline:
  1. model forward alone, channels_last (what the app uses) vs the default contiguous layout;
  2. decode + preprocess + forward in-process;
  3. HTTP POST /api/classify (multipart upload) against a live uvicorn: p50 / p95 over >= 50 requests;
  4. 8 concurrent clients vs 1 sequential client: throughput and errors.
Targets: HTTP p50 <= 1.3x the in-process pipeline; 8 clients finish without errors at >= sequential throughput.

Run: .venv/bin/python bench/classify.py [--requests 60]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cnn.classify import predict_proba  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.core.images import decode_image  # noqa: E402
from app.main import configure_torch  # noqa: E402
from app.services.model_store import ModelStore  # noqa: E402

IMAGE = ROOT / "static" / "samples" / "cat.jpg"


def timed(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def start_server(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVSCOPE_LOG_LEVEL": "WARNING", "CONVSCOPE_DATA_DIR": "/tmp/convscope-bench"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health").json()["default_model_loaded"]:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    n = args.requests

    settings = Settings()
    configure_torch(settings)
    store = ModelStore(settings)
    loaded = store.get(settings.default_model)
    data = IMAGE.read_bytes()
    pre = loaded.spec.preprocessing
    x = pre.to_tensor(decode_image(data, max_bytes=10**8, max_pixels=10**8).image)[None]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    contiguous_model = copy.deepcopy(loaded.module).to(memory_format=torch.contiguous_format)

    for _ in range(5):  # warm-up
        predict_proba(loaded.module, x_cl)
        predict_proba(contiguous_model, x)
    fwd_cl = statistics.median(timed(lambda: predict_proba(loaded.module, x_cl), n))
    fwd_contig = statistics.median(timed(lambda: predict_proba(contiguous_model, x), n))

    def pipeline() -> None:
        image = decode_image(data, max_bytes=10**8, max_pixels=10**8).image
        batch = pre.to_tensor(image)[None].contiguous(memory_format=torch.channels_last)
        predict_proba(loaded.module, batch)

    inproc = statistics.median(timed(pipeline, n))

    print(f"threads: torch {torch.get_num_threads()}, cores {os.cpu_count()}; image {IMAGE.name}; {n} requests each")
    print(f"{'measure':48} {'ms':>9} {'ratio':>8}")
    print(f"{'in-process decode+preprocess+forward (baseline)':48} {inproc:9.1f} {1.0:8.2f}")
    print(f"{'forward, channels_last (used)':48} {fwd_cl:9.1f} {fwd_cl / inproc:8.2f}")
    print(f"{'forward, contiguous (default layout)':48} {fwd_contig:9.1f} {fwd_contig / inproc:8.2f}")

    proc = start_server(args.port)
    try:
        url = f"http://127.0.0.1:{args.port}/api/classify"
        files = {"file": ("cat.jpg", data, "image/jpeg")}
        with httpx.Client(timeout=60) as client:
            for _ in range(5):
                client.post(url, files=files).raise_for_status()
            start = time.perf_counter()
            http = timed(lambda: client.post(url, files=files).raise_for_status(), n)
            sequential_s = time.perf_counter() - start
        p50, p95 = pct(http, 0.5), pct(http, 0.95)
        print(f"{'HTTP POST /api/classify p50 (target <= 1.3)':48} {p50:9.1f} {p50 / inproc:8.2f}")
        print(f"{'HTTP POST /api/classify p95':48} {p95:9.1f} {p95 / inproc:8.2f}")

        clients, per_client = 8, max(1, n // 8)
        errors: list[str] = []

        def worker(_: int) -> int:
            ok = 0
            with httpx.Client(timeout=120) as c:
                for _ in range(per_client):
                    r = c.post(url, files=files)
                    if r.status_code == 200:
                        ok += 1
                    else:
                        errors.append(f"{r.status_code} {r.text[:80]}")
            return ok

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            ok = sum(pool.map(worker, range(clients)))
        concurrent_s = time.perf_counter() - start
        seq_rps, conc_rps = n / sequential_s, ok / concurrent_s
        print(f"{'sequential throughput (req/s)':48} {seq_rps:9.1f}")
        print(f"{'8 concurrent clients throughput (req/s)':48} {conc_rps:9.1f} {conc_rps / seq_rps:8.2f} x sequential")
        print(f"8 concurrent clients: {ok} ok, {len(errors)} errors {errors[:3]}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
