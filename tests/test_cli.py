"""The console entry: ``convscope classify`` and ``convscope models`` in a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT, SAMPLES


def convscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=180)


def test_classify_prints_json_for_several_images() -> None:
    result = convscope("classify", str(SAMPLES / "coffee.jpg"), str(SAMPLES / "cat.jpg"), "--json", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [o["image"] for o in out] == [str(SAMPLES / "coffee.jpg"), str(SAMPLES / "cat.jpg")]
    assert out[0]["predictions"][0]["label"] == "espresso"
    assert out[1]["predictions"][0]["label"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert all(len(o["predictions"]) == 2 and o["model"] == "efficientnet_lite0" for o in out)


def test_classify_prints_a_readable_table() -> None:
    result = convscope("classify", str(SAMPLES / "coffee.jpg"), "--top-k", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("coffee.jpg (efficientnet_lite0)")
    assert "espresso  [967]" in lines[1]


def test_errors_exit_2_with_a_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    result = convscope("classify", str(text))
    assert result.returncode == 2
    assert "is not an image this server can read" in result.stderr
    result = convscope("classify", str(tmp_path / "missing.jpg"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = convscope("classify", str(SAMPLES / "cat.jpg"), "--model", "resnet18")
    assert result.returncode == 2 and "resnet18-f37072fd.pth" in result.stderr


def test_models_lists_the_zoo() -> None:
    result = convscope("models")
    assert result.returncode == 0
    assert "efficientnet_lite0" in result.stdout and "weights: bundled" in result.stdout
    assert "missing: resnet18-f37072fd.pth" in result.stdout
