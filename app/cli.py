"""``convscope``: serve the app, or classify images from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.core.config import Settings
from app.core.errors import ConvScopeError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    settings = Settings()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the app logs each request itself (convscope.requests), so uvicorn's access log would say it twice
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False)
    return 0


def _classify(args: argparse.Namespace) -> int:
    from app.main import configure_torch
    from app.services.classification import classify_uploads
    from app.services.image_store import ImageStore
    from app.services.model_store import ModelStore

    settings = Settings()
    configure_torch(settings)
    store, images = ModelStore(settings), ImageStore(settings)
    model = args.model or settings.default_model
    try:
        uploads = [(str(path), Path(path).read_bytes()) for path in args.images]
        results = classify_uploads(store, images, uploads, model, args.top_k)
    except OSError as exc:
        print(f"convscope: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ConvScopeError as exc:
        print(f"convscope: {exc.detail}", file=sys.stderr)
        return 2
    if args.json:
        out = [
            {"image": name, "model": r.model, "predictions": [p.__dict__ for p in r.predictions],
             "timings_ms": r.timings_ms, "forward_batch": r.forward_batch}
            for (name, _), r in zip(uploads, results, strict=True)
        ]
        print(json.dumps(out, indent=2))
        return 0
    for (name, _), result in zip(uploads, results, strict=True):
        print(f"{name} ({result.model})")
        for p in result.predictions:
            print(f"  {p.probability * 100:6.2f}%  {p.label}  [{p.index}]")
    return 0


def _models(args: argparse.Namespace) -> int:
    from app.services.model_store import ModelStore

    store = ModelStore(Settings())
    for spec in store.specs():
        status = store.weights_status(spec.name)
        where = status.source if status.available else f"missing: {status.file_name}"
        print(f"{spec.name:20} {spec.num_params / 1e6:7.1f}M params  {spec.num_classes:5} classes  weights: {where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convscope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the web app and API")
    serve.add_argument("--host", help="default: CONVSCOPE_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default: CONVSCOPE_PORT or 8000")
    serve.set_defaults(func=_serve)
    classify = sub.add_parser("classify", help="print the top classes of one or more images")
    classify.add_argument("images", nargs="+", metavar="IMAGE")
    classify.add_argument("--model", help="default: CONVSCOPE_DEFAULT_MODEL or efficientnet_lite0")
    classify.add_argument("--top-k", type=int, default=5)
    classify.add_argument("--json", action="store_true", help="print JSON")
    classify.set_defaults(func=_classify)
    models = sub.add_parser("models", help="list the models and whether their weights are here")
    models.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "top_k", 1) < 1:
        print("convscope: --top-k must be >= 1", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
