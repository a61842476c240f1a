"""The playground engine against independent numpy/scipy references, over random layers (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from app.cnn.conv import (
    PRESETS,
    ActivationLayer,
    PoolLayer,
    SpecError,
    axis_size,
    channels_last,
    conv_layer,
    image_tensor,
    multiply_adds,
    plan,
    render,
    resolve_padding,
    run,
    stats,
)
from app.cnn.conv_steps import explain

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NP_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
CLASSIC = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]


# --- numpy references ----------------------------------------------------------------------------------


def ref_correlate(x: np.ndarray, k: np.ndarray, stride: tuple[int, int],
                  dilation: tuple[int, int]) -> np.ndarray:
    """Cross-correlation of an already padded (H, W) map: every window, then every stride-th one."""
    (sh, sw), (dh, dw) = stride, dilation
    extent = (dh * (k.shape[0] - 1) + 1, dw * (k.shape[1] - 1) + 1)
    windows = sliding_window_view(x, extent)[::sh, ::sw, ::dh, ::dw]  # (oh, ow, kh, kw)
    return np.einsum("ijab,ab->ij", windows, k)


def ref_conv(image: np.ndarray, layer_kernel: np.ndarray, kind: str, stride: tuple[int, int],
             pad: tuple[int, int, int, int], mode: str, dilation: tuple[int, int], bias: float) -> np.ndarray:
    top, bottom, left, right = pad
    padded = np.pad(image, ((0, 0), (top, bottom), (left, right)), mode=NP_MODES[mode])  # type: ignore[call-overload]
    if kind == "per_channel":
        return np.stack([ref_correlate(ch, layer_kernel, stride, dilation) for ch in padded]) + bias
    bank = layer_kernel if kind == "bank" else layer_kernel[None]
    return np.stack([
        sum(ref_correlate(ch, f, stride, dilation) for ch, f in zip(padded, filt, strict=True))
        for filt in bank
    ]) + bias


def ref_pool(image: np.ndarray, mode: str, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
             ceil_mode: bool) -> np.ndarray:
    """Pooling over padded windows whose padding is ignored; ceil_mode adds a partial last window whose
    start lies inside the input or the left padding."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=np.nan)

    def starts(n: int, kk: int, ss: int, pp: int) -> list[int]:
        full = list(range(0, n + 2 * pp - kk + 1, ss))
        if ceil_mode and full and full[-1] + kk < n + 2 * pp and full[-1] + ss < n + pp:
            full.append(full[-1] + ss)
        return full

    out = np.empty((c, len(starts(h, k[0], s[0], p[0])), len(starts(w, k[1], s[1], p[1]))))
    for i, r in enumerate(starts(h, k[0], s[0], p[0])):
        for j, q in enumerate(starts(w, k[1], s[1], p[1])):
            window = padded[:, r: r + k[0], q: q + k[1]].reshape(c, -1)
            out[:, i, j] = np.nanmax(window, 1) if mode == "max" else np.nanmean(window, 1)
    return out


# --- strategies ----------------------------------------------------------------------------------------

sides = st.integers(1, 12)
small = st.integers(1, 3)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(sides), draw(sides)
    kind = draw(st.sampled_from(["per_channel", "depth", "bank"]))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    filters = draw(st.integers(1, 4))
    shape = {"per_channel": (kh, kw), "depth": (c, kh, kw), "bank": (filters, c, kh, kw)}[kind]
    kernel = draw(st.lists(st.integers(-4, 4), min_size=math.prod(shape), max_size=math.prod(shape)))
    padding = draw(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.sampled_from(["valid", "same", "full"])))
    return {
        "image": draw(st.lists(st.integers(0, 255), min_size=c * h * w, max_size=c * h * w)),
        "shape": (c, h, w),
        "kernel": np.array(kernel, dtype=np.float64).reshape(shape),
        "stride": (draw(small), draw(small)),
        "dilation": (draw(small), draw(small)),
        "padding": padding,
        "padding_mode": draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        "bias": draw(st.sampled_from([0.0, 1.5, -3.0])),
    }


def _planned(layers: list, shape: tuple[int, int, int]) -> list:
    try:
        return plan(layers, shape, 10**7)
    except SpecError:
        assume(False)
        raise


@FAST
@given(conv_cases())
def test_conv_matches_numpy_reference(case: dict) -> None:
    c, h, w = case["shape"]
    image = np.array(case["image"], dtype=np.float64).reshape(c, h, w)
    layer = conv_layer(case["kernel"].tolist(), stride=case["stride"], padding=case["padding"],
                       padding_mode=case["padding_mode"], dilation=case["dilation"], bias=case["bias"])
    (step,) = _planned([layer], (c, h, w))
    (out,) = run(torch.from_numpy(image).float()[None], [layer], [step])
    pad = resolve_padding(layer.padding, layer.kernel_size, layer.dilation)
    expected = ref_conv(image, case["kernel"], layer.kind, case["stride"],
                        (pad.top, pad.bottom, pad.left, pad.right), case["padding_mode"], case["dilation"],
                        case["bias"])
    assert tuple(out.shape[1:]) == step.shape == expected.shape  # the formula is the real shape
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-5, atol=1e-2)


@FAST
@given(
    c=st.sampled_from([1, 3]), h=sides, w=sides, mode=st.sampled_from(["max", "avg"]),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.one_of(st.none(), st.tuples(small, small)),
    p=st.tuples(st.integers(0, 2), st.integers(0, 2)), ceil_mode=st.booleans(), seed=st.integers(0, 2**16),
)
def test_pool_matches_numpy_reference(c: int, h: int, w: int, mode: str, k: tuple[int, int],
                                      s: tuple[int, int] | None, p: tuple[int, int], ceil_mode: bool,
                                      seed: int) -> None:
    image = np.random.default_rng(seed).integers(-50, 255, (c, h, w)).astype(np.float64)
    layer = PoolLayer(mode, k, s, p, ceil_mode)  # type: ignore[arg-type]
    (step,) = _planned([layer], (c, h, w))
    (out,) = run(torch.from_numpy(image).float()[None], [layer], [step])
    expected = ref_pool(image, mode, k, s or k, p, ceil_mode)
    assert tuple(out.shape[1:]) == step.shape == expected.shape
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-5, atol=1e-3)


@FAST
@given(i=st.integers(1, 300), k=st.integers(1, 31), s=st.integers(1, 16), p=st.integers(0, 20),
       d=st.integers(1, 8), ceil_mode=st.booleans())
def test_axis_formula_equals_torch_shapes(i: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> None:
    size = axis_size(i, k, s, p, p, d, ceil_mode)
    x = torch.zeros(1, 1, 1, i)
    if size.size < 1:
        return
    if ceil_mode:  # pooling: torch's own rule with padding <= k/2, and no dilation for avg
        assume(p <= k // 2)
        expected = torch.nn.functional.max_pool2d(x, (1, k), (1, s), (0, p), (1, d), ceil_mode=True).shape[-1]
    else:
        expected = torch.nn.functional.conv2d(x, torch.zeros(1, 1, 1, k), stride=(1, s), padding=(0, p),
                                              dilation=(1, d)).shape[-1]
    assert size.size == expected
    assert size.text.endswith(f"= {expected}") or f"= {expected} (" in size.text
    assert f"({i} + 2×{p} − {d}×({k} − 1) − 1) / {s}" in size.text


@FAST
@given(layers=st.lists(st.sampled_from([
    conv_layer("sobel_x", stride=2, padding="same"),
    conv_layer("gaussian_5", padding="valid", dilation=2),
    conv_layer([[[1.0, -1.0]] * 2] * 3, padding=(1, 0), padding_mode="replicate"),
    conv_layer([[[[0.5]]] * 3] * 3, bias=[1.0, 2.0, 3.0]),
    ActivationLayer("leaky_relu"), ActivationLayer("tanh"),
    PoolLayer("max", (3, 3), (2, 2), (1, 1), True), PoolLayer("avg", (2, 3)), PoolLayer("global_avg"),
]), min_size=1, max_size=4), h=st.integers(4, 24), w=st.integers(4, 24))
def test_pipeline_shapes_follow_the_plan(layers: list, h: int, w: int) -> None:
    plans = _planned(layers, (3, h, w))
    outputs = run(torch.rand(1, 3, h, w) * 255, layers, plans)
    assert [tuple(o.shape[1:]) for o in outputs] == [p.shape for p in plans]


def test_per_channel_conv_equals_scipy_correlate2d() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    layer = conv_layer("sobel_y", padding=0)
    (out,) = run(image_tensor(rgb), [layer], plan([layer], (3, 20, 30), 10**6))
    for ch in range(3):
        kernel = np.array(PRESETS["sobel_y"].kernel)
        expected = signal.correlate2d(rgb[..., ch].astype(np.float64), kernel, "valid")
        np.testing.assert_allclose(out[0, ch].numpy(), expected, atol=1e-3)


def test_grayscale_is_pillow_luma() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    grey = image_tensor(rgb, grayscale=True)
    assert grey.shape == (1, 1, 1, 4)
    np.testing.assert_allclose(grey[0, 0, 0].numpy(), [76.245, 149.685, 29.07, 18.15], atol=1e-3)


def test_image_tensor_is_channels_last() -> None:
    rgb = np.zeros((8, 6, 3), dtype=np.uint8)
    assert image_tensor(rgb).is_contiguous(memory_format=torch.channels_last)


def test_presets_have_descriptions_and_expected_sums() -> None:
    assert len(PRESETS) == 15
    for preset in PRESETS.values():
        assert preset.description and "\n" not in preset.description
    sums = {name: round(float(np.sum(p.kernel)), 9) for name, p in PRESETS.items()}
    for name in ("identity", "box_blur", "gaussian_3", "gaussian_5", "sharpen", "emboss", "motion_blur"):
        assert sums[name] == 1.0, name
    edges = ("laplacian", "sobel_x", "sobel_y", "prewitt_x", "prewitt_y", "scharr_x", "scharr_y", "outline")
    for name in edges:
        assert sums[name] == 0.0, name


# --- steps ---------------------------------------------------------------------------------------------


def test_classic_max_pool_example() -> None:
    result = explain(CLASSIC, PoolLayer("max", (3, 3), (1, 1)))
    assert result.output == [[3, 3, 3], [3, 3, 3], [3, 2, 3]]
    last = result.steps[-1]
    assert (last.row, last.col, last.rows, last.cols, last.argmax) == (2, 2, [2, 3, 4], [2, 3, 4], [2, 4])


def test_classic_avg_pool_example() -> None:
    result = explain(CLASSIC, PoolLayer("avg", (3, 3), (1, 1)))
    assert result.output[0][0] == pytest.approx(15 / 9)
    assert all(step.count == 9 for step in result.steps)


@FAST
@given(case=conv_cases())
def test_steps_products_sum_to_outputs_and_match_the_engine(case: dict) -> None:
    assume(case["kernel"].ndim == 2)
    c, h, w = case["shape"]
    matrix = np.array(case["image"][: h * w], dtype=np.float64).reshape(h, w)
    layer = conv_layer(case["kernel"].tolist(), stride=case["stride"], padding=case["padding"],
                       padding_mode=case["padding_mode"], dilation=case["dilation"], bias=case["bias"])
    try:
        result = explain(matrix.tolist(), layer)
    except SpecError:
        assume(False)
    flat = [v for row in result.output for v in row]
    for step, value in zip(result.steps, flat, strict=True):
        assert step.products is not None and step.sum is not None
        assert math.fsum(p for row in step.products for p in row) == step.sum
        assert step.sum + case["bias"] == value
        # the window sits on the padded input at the stride and dilation
        (sh, _), (dh, _) = case["stride"], case["dilation"]
        assert step.rows == [step.row * sh + a * dh for a in range(len(step.rows))]
        assert [[result.padded[r][q] for q in step.cols] for r in step.rows] == step.window
    (engine,) = run(torch.from_numpy(matrix)[None, None], [layer], plan([layer], (1, h, w), 10**6))
    np.testing.assert_allclose(engine[0, 0].numpy(), np.array(result.output), rtol=1e-12, atol=1e-9)


@FAST
@given(h=sides, w=sides, mode=st.sampled_from(["max", "avg"]), k=st.integers(1, 4), s=small,
       p=st.integers(0, 2), ceil_mode=st.booleans(), seed=st.integers(0, 999))
def test_pool_steps_match_the_engine(h: int, w: int, mode: str, k: int, s: int, p: int, ceil_mode: bool,
                                     seed: int) -> None:
    matrix = np.random.default_rng(seed).integers(-9, 10, (h, w)).astype(np.float64)
    layer = PoolLayer(mode, (k, k), (s, s), (p, p), ceil_mode)  # type: ignore[arg-type]
    try:
        result = explain(matrix.tolist(), layer)
    except SpecError:
        assume(False)
    (engine,) = run(torch.from_numpy(matrix)[None, None], [layer], plan([layer], (1, h, w), 10**6))
    np.testing.assert_allclose(engine[0, 0].numpy(), np.array(result.output), rtol=1e-12)
    for step in result.steps:
        real = [v for row in step.window for v in row if v is not None]
        if mode == "max":
            assert step.value == max(real) and step.argmax is not None
            assert result.padded[step.argmax[0]][step.argmax[1]] == step.value
        else:
            assert step.count == len(real) and step.value == pytest.approx(sum(real) / len(real))


def test_activation_and_global_steps() -> None:
    relu = explain([[-1.0, 2.0]], ActivationLayer("relu"))
    assert relu.output == [[0.0, 2.0]] and [s.value for s in relu.steps] == [0.0, 2.0]
    glob = explain(CLASSIC, PoolLayer("global_max"))
    assert glob.output == [[3.0]] and glob.steps[0].argmax == [0, 0]


# --- bad layers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        ([[1, 2], [3]], "ragged"),
        ([], "depth 1"),
        ([[]], "empty"),
        ([[1.0, float("nan")]], "NaN"),
        ([[float("inf")]], "NaN or infinity"),
        ([["a"]], "rectangular array of numbers"),
        ([[0.0] * 32], "1×32; each side must be 1-31"),
        (5, "depth 0"),
        ([[[[1.0]]]] * 17, "17 filters"),
    ],
)
def test_bad_kernels_are_refused(kernel: object, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        conv_layer(kernel, field="layers[0].kernel")
    assert info.value.field == "layers[0].kernel"


def test_bad_layers_name_their_field() -> None:
    with pytest.raises(SpecError, match="unknown preset 'blur'; choose one of: identity") as info:
        conv_layer("blur", field="layers[2].kernel")
    assert info.value.field == "layers[2].preset"
    with pytest.raises(SpecError, match="1-16") as info:
        conv_layer("identity", stride=17)
    assert info.value.field == "stride"
    with pytest.raises(SpecError, match="1-8"):
        conv_layer("identity", dilation=(1, 9))
    with pytest.raises(SpecError, match="one per filter"):
        conv_layer([[[[1.0]]]] * 2, bias=[1.0, 2.0, 3.0])
    cases = [
        (conv_layer([[[1.0]]] * 2), "2 slices deep but its input has 3 channels", "layers[0].kernel"),
        (conv_layer([[1.0] * 9] * 9), "spans 9×9 .* padded input is only 5×8", "layers[0].kernel"),
        (conv_layer("identity", dilation=3), "spans 7×7", "layers[0].kernel"),
        (conv_layer("identity", padding=5, padding_mode="reflect"), "smaller than the input",
         "layers[0].padding"),
        (PoolLayer("max", (2, 2), None, (2, 0)), "at most half the kernel size", "layers[0].padding"),
        (PoolLayer("avg", (6, 1)), "padded input is only 5×8", "layers[0].kernel_size"),
    ]
    for layer, message, field in cases:
        with pytest.raises(SpecError, match=message) as info:
            plan([layer], (3, 5, 8), 10**6)
        assert info.value.field == field


def test_work_limit_is_checked_before_computing() -> None:
    bank = conv_layer([[[[0.0] * 5] * 5] * 3] * 16, padding="same")  # 16 filters, 3 deep, 5×5
    assert plan([bank], (3, 10, 10), 10**6, 120_000)[0].shape == (16, 10, 10)  # 16·100·3·25 = 120,000
    with pytest.raises(SpecError, match=r"120,000 multiply-adds; the limit is 119,999") as info:
        plan([bank], (3, 10, 10), 10**6, 119_999)
    assert info.value.field == "layers[0]"
    layers = [conv_layer("sobel_x"), PoolLayer("max", (2, 2)), PoolLayer("global_avg"),
              ActivationLayer("relu")]
    plans = plan(layers, (3, 10, 10), 10**6)
    shapes = [(3, 10, 10)] + [p.shape for p in plans]
    costs = [multiply_adds(layer, a, b) for layer, a, b in zip(layers, shapes[:-1], shapes[1:], strict=True)]
    assert costs == [3 * 8 * 8 * 9, 3 * 4 * 4 * 4, 3 * 4 * 4, 3]


def test_output_limit_is_checked_before_computing() -> None:
    layers = [ActivationLayer("relu"), conv_layer("identity", padding="full")]
    with pytest.raises(SpecError, match=r"3×12×12 = 432 values; the limit is 400") as info:
        plan(layers, (3, 10, 10), 400)
    assert info.value.field == "layers[1]"


# --- rendering -----------------------------------------------------------------------------------------


def test_render_modes() -> None:
    y = torch.tensor([[[[-300.0, -10.0], [0.0, 300.0]]]])  # (1, 1, 2, 2)
    assert render(y, "clip").tolist() == [[0, 0], [0, 255]]
    assert render(y, "abs").tolist() == [[255, 10], [0, 255]]
    assert render(y, "minmax").tolist() == [[0, 123], [128, 255]]  # 290/600×255 = 123.25
    colours = render(y, "diverging")
    assert colours.shape == (2, 2, 3)
    assert colours[0, 0].tolist() == [33, 102, 172] and colours[1, 1].tolist() == [178, 24, 43]
    assert colours[1, 0].tolist() == [247, 247, 247]
    assert render(torch.full((1, 1, 2, 2), 7.0), "minmax").tolist() == [[0, 0], [0, 0]]


def test_render_layouts() -> None:
    assert render(torch.zeros(1, 3, 4, 5), "clip").shape == (4, 5, 3)
    assert render(torch.zeros(1, 3, 4, 5), "diverging").shape == (4 * 2 + 2, 5 * 2 + 2, 3)  # 2×2 tiles
    montage = render(torch.zeros(1, 5, 4, 5), "clip")
    assert montage.shape == (4 * 2 + 2, 5 * 3 + 2 * 2)  # 5 maps on a 3-wide grid
    assert montage[4, 0] == 255 and montage[0, 0] == 0  # white gaps between black maps


def test_stats_are_population_statistics() -> None:
    assert stats(torch.tensor([[[[1.0, 3.0]]]])) == {"min": 1.0, "max": 3.0, "mean": 2.0, "std": 1.0}


def test_image_tensor_has_full_channels_last_strides() -> None:
    """A permuted view of HWC pixels has batch stride 3, which oneDNN does not treat as channels_last."""
    rgb = np.zeros((8, 6, 3), dtype=np.uint8)
    rgb.setflags(write=False)  # as np.asarray(PIL image) gives
    x = image_tensor(rgb)
    assert x.stride() == (8 * 6 * 3, 1, 6 * 3, 3)
    view = torch.zeros(8, 6, 3).permute(2, 0, 1).unsqueeze(0)
    assert view.stride(0) == 3 and channels_last(view).stride() == (8 * 6 * 3, 1, 6 * 3, 3)


def test_stats_do_not_depend_on_the_layout() -> None:
    y = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    expected = {"min": 0.0, "max": 119.0, "mean": 59.5, "std": pytest.approx(float(y.double().std(correction=0)))}
    assert stats(y) == expected
    assert stats(y.contiguous(memory_format=torch.channels_last)) == expected
