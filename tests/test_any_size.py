"""Models beyond the size they were built for: attention-bias resizing by a named strategy
("table", "pairwise"; npformer/models/attention_bias.py) and the backbone API
(`forward_intermediates`, `feature_info`, `features_only`; npformer/models/features.py).

Torch-free: the golden fixtures of tests/fixtures/golden_any_size (timm / transformers outputs;
how they are made is in its make_golden.py). Live tier: the same cases against the references
run here, and timm's `features_only=True` models.
"""

import re
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer.checkpoints.seeded import seeded_weights
from npformer.errors import ConfigError, InputError
from npformer.models.classes import model_class
from npformer.models.registry import family_of
from npformer.tools.parity import sample
from tiers import heavy

HERE = Path(__file__).parent
GOLDEN = HERE / "fixtures" / "golden_any_size"

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("golden_any_size", GOLDEN / "make_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

DTYPES = (np.float32, np.float64)
PRECISIONS = [np.float32, pytest.param(np.float64, marks=heavy)]  # float32 covers every size in the default tier
TOL = {np.float32: 1e-4, np.float64: 1e-9}  # relative to the largest reference value


def read_golden(case):
    from safetensors.numpy import load_file

    return load_file(str(GOLDEN / f"{case}.safetensors"))


def close(ours, ref, dtype):
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(np.asarray(ours, np.float64) - ref).max())
    assert err <= TOL[dtype] * scale, f"max |Δ| {err:.3g} (scale {scale:.3g})"
    return err


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """npformer files of the 224-built seeded models, by (family, variant, reference)."""
    root, made = tmp_path_factory.mktemp("any_size"), {}

    def path(family, variant, reference="timm", built=224):
        key = (family, variant, reference, str(built))
        if key not in made:
            cfg = golden.case_config(family, variant, reference, built)
            arch = family_of(cfg).architecture(2)
            model = model_class(arch)(cfg, seeded_weights(cfg, num_heads=2, seed=0))
            made[key] = root / f"{family}_{variant}_{reference}_{built}.safetensors".replace(" ", "")
            model.save_pretrained(made[key])
        return made[key]

    return path


# ---------------------------------------------------------------------------------------------
# strategies: errors and bookkeeping


def test_default_refuses_another_grid_and_names_the_strategies(checkpoints):
    path = checkpoints("efficientformer", "l1")
    with pytest.raises(InputError, match=r"7×7 attention grid.*320×320 input gives 10×10.*'table'.*'pairwise'"):
        npformer.from_pretrained(path, image_size=(320, 320))
    model = npformer.from_pretrained(path)
    with pytest.raises(InputError, match=r"193–224 px; got 256×256.*attention_bias_resize"):
        model(np.zeros((1, 3, 256, 256), np.float32))


def test_same_grid_needs_no_strategy(checkpoints):
    """200 px gives the 7×7 grid of a 224 model: nothing to resize, the model is the 224 one."""
    path = checkpoints("efficientformer", "l1")
    model = npformer.from_pretrained(path, image_size=200)
    assert model.config.resolution == 7 and model.config.attention_bias_resize is None


def test_unknown_strategy_and_table_without_size(checkpoints):
    path = checkpoints("efficientformer", "l1")
    with pytest.raises(ConfigError, match="'bilinear' is not a strategy"):
        npformer.from_pretrained(path, image_size=320, attention_bias_resize="bilinear")
    with pytest.raises(ConfigError, match="give image_size"):
        npformer.from_pretrained(path, attention_bias_resize="table")


def test_table_rebuilds_the_config_and_saves_as_a_model_of_that_size(checkpoints, tmp_path):
    model = npformer.from_pretrained(checkpoints("efficientformer", "l1"), image_size=320, attention_bias_resize="table")
    assert model.config.resolution == 10 and model.config.attention_bias_resize is None
    assert model.weights["stages.3.blocks.4.token_mixer.attention_biases"].shape == (8, 100)
    model.save_pretrained(tmp_path / "l1_320.safetensors")
    again = npformer.from_pretrained(tmp_path / "l1_320.safetensors")
    assert again.config.resolution == 10
    x = golden.case_pixels((320, 320), 1)
    np.testing.assert_array_equal(again(x).logits, model(x).logits)


def test_v1_table_needs_a_square_grid(checkpoints):
    with pytest.raises(ConfigError, match=r"7×10 last stage.*square.*'pairwise'"):
        npformer.from_pretrained(checkpoints("efficientformer", "l1"), image_size=(224, 320), attention_bias_resize="table")


def test_v2_odd_stage2_grid_is_refused_clearly(checkpoints):
    path = checkpoints("efficientformerv2", "s0")
    with pytest.raises(ConfigError, match=r"15×15 stage-2 grid.*240 does not"):
        npformer.from_pretrained(path, image_size=240, attention_bias_resize="table")
    model = npformer.from_pretrained(path, attention_bias_resize="pairwise")
    with pytest.raises(InputError, match=r"15×15 stage-2 grid.*must be even"):
        model(np.zeros((1, 3, 240, 240), np.float32))


def test_pairwise_keeps_the_tables_and_records_the_strategy(checkpoints, tmp_path):
    path = checkpoints("efficientformerv2", "s0")
    model = npformer.from_pretrained(path, image_size=256, attention_bias_resize="pairwise")
    assert model.config.attention_bias_resize == "pairwise" and model.config.image_size == 224
    original = npformer.from_pretrained(path)
    for name, table in original.weights.items():
        np.testing.assert_array_equal(model.weights[name], table)
    model.save_pretrained(tmp_path / "pairwise.safetensors")
    assert npformer.from_pretrained(tmp_path / "pairwise.safetensors").config.attention_bias_resize == "pairwise"
    x = golden.case_pixels((224, 224), 1)  # at the built size the strategy changes nothing
    np.testing.assert_array_equal(model(x).logits, original(x).logits)


def test_swiftformer_has_no_bias_and_takes_any_size(checkpoints):
    model = npformer.from_pretrained(checkpoints("swiftformer", "xs"), image_size=(224, 320))
    assert model(golden.case_pixels((224, 320), 1)).logits.shape == (1, 1000)


def test_offset_index_on_a_non_square_grid_is_first_appearance_order():
    """timm's closed form |Δr|·W + |Δc| and the original's numbering of offsets in order of first
    appearance (itertools.product over the points, twice) agree on non-square grids too: the first
    query, (0, 0), meets every offset, in row-major order."""
    import itertools

    from npformer.layers import attention_bias_index_grid

    for H, W in ((7, 10), (10, 7), (3, 5), (1, 4)):
        points = list(itertools.product(range(H), range(W)))
        offsets, idx = {}, []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idx.append(offsets.setdefault(off, len(offsets)))
        np.testing.assert_array_equal(attention_bias_index_grid(H, W), np.array(idx).reshape(H * W, H * W))


# ---------------------------------------------------------------------------------------------
# strategies against the references (golden values)


def npformer_bias_case(case, dtype, checkpoints, fuse=False):
    family, variant, reference, size, strategy = golden.BIAS_CASES[case]
    path = checkpoints(family, variant, reference)
    model = npformer.from_pretrained(path, dtype=dtype, image_size=size, attention_bias_resize=strategy, fuse=fuse)
    return model, golden.case_pixels(size)


@pytest.mark.parametrize("dtype", PRECISIONS, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(golden.BIAS_CASES))
def test_bias_strategy_matches_reference(case, dtype, checkpoints):
    ref = read_golden(case)
    model, pixels = npformer_bias_case(case, dtype, checkpoints)
    close(model(pixels).logits, ref[f"{np.dtype(dtype).name}/logits"], dtype)
    fused = npformer_bias_case(case, dtype, checkpoints, fuse=True)[0]
    close(fused(pixels).logits, ref[f"{np.dtype(dtype).name}/logits"], dtype)


@pytest.mark.parametrize("dtype", PRECISIONS, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(golden.NATIVE_CASES))
def test_model_built_for_its_grid_matches_transformers(case, dtype, tmp_path):
    """transformers' `resolution` builds EfficientFormer for another grid (10: 320 px), and a 224
    model takes a non-square input whose sides both give its grid; no strategy is involved."""
    cfg = golden.native_config(case)
    path = tmp_path / "native.safetensors"
    npformer.EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, num_heads=2, seed=0)).save_pretrained(path)
    model = npformer.from_pretrained(path, dtype=dtype)
    assert model.config.resolution == golden.NATIVE_CASES[case][0]
    pixels = golden.case_pixels(golden.NATIVE_CASES[case][1])
    close(model(pixels).logits, read_golden(case)[f"{np.dtype(dtype).name}/logits"], dtype)


@pytest.mark.parametrize("case", list(golden.NATIVE_CASES))
def test_live_model_built_for_its_grid(case, tmp_path):
    _oracle()
    cfg = golden.native_config(case)
    pixels = golden.case_pixels(golden.NATIVE_CASES[case][1])
    for dtype in DTYPES:
        model = npformer.EfficientFormerForImageClassificationWithTeacher(cfg, seeded_weights(cfg, num_heads=2, seed=0),
                                                                          dtype=dtype)
        reference = golden.native_reference(case, dtype)
        close(model(pixels).logits, golden.run_reference(reference, pixels, "transformers"), dtype)


@pytest.mark.parametrize("case", [c for c, spec in golden.BIAS_CASES.items() if spec[4] == "table"])
def test_table_resize_matches_torch(case, checkpoints):
    """The float32 tables equal timm's resize_rel_pos_bias_table_levit (square) or torch's bicubic
    antialiased interpolate (non-square) to float32 rounding."""
    ref = read_golden(case)
    model, _ = npformer_bias_case(case, np.float32, checkpoints)
    names = [k.removeprefix("table/") for k in ref if k.startswith("table/")]
    assert names
    for name in names:
        np.testing.assert_allclose(model.weights[name], ref[f"table/{name}"], rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# the backbone API against timm (golden values)


def npformer_feature_model(case, dtype, checkpoints):
    family, variant, size, built = golden.FEATURE_CASES[case]
    path = checkpoints(family, variant, "timm", built)
    strategy = "pairwise" if built == "pairwise" else None
    return npformer.from_pretrained(path, dtype=dtype, attention_bias_resize=strategy), golden.case_pixels(size)


@pytest.mark.parametrize("dtype", PRECISIONS, ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(golden.FEATURE_CASES))
def test_forward_intermediates_match_timm(case, dtype, checkpoints):
    ref, prefix = read_golden(case), np.dtype(dtype).name
    model, pixels = npformer_feature_model(case, dtype, checkpoints)
    final, maps = model.forward_intermediates(pixels)
    for i, name in enumerate(golden.STAGES):
        hooked = f"{prefix}/hooked.{name}"  # the stage module's output
        ours = maps[i]
        if ours.ndim == 4 and ref[hooked].size and golden.FEATURE_CASES[case][0] == "efficientformer" and i == 3:
            ours = ours.reshape(*ours.shape[:2], -1).transpose(0, 2, 1)  # timm's last V1 stage outputs tokens
        close(sample(ours, hooked, golden.SAMPLES), ref[hooked], dtype)
        if f"{prefix}/maps.{i}" in ref:  # timm's forward_intermediates ran: its maps too
            close(sample(maps[i], f"{prefix}/maps.{i}", golden.SAMPLES), ref[f"{prefix}/maps.{i}"], dtype)
    if f"{prefix}/final" in ref:
        close(sample(final, f"{prefix}/final", golden.SAMPLES), ref[f"{prefix}/final"], dtype)
        normed = model.forward_intermediates(pixels, indices=1, norm=True, intermediates_only=True)[0]
        close(sample(normed, f"{prefix}/normed", golden.SAMPLES), ref[f"{prefix}/normed"], dtype)


def test_timm_v1_forward_intermediates_fails_at_200_px():
    """The fixture records timm's own failure (spec §12.3), which npformer's ⌈H/2⌉ avoids."""
    from safetensors import safe_open

    with safe_open(str(GOLDEN / "l1_200.safetensors"), "np") as f:
        assert "is invalid for input of size" in f.metadata()["timm_forward_intermediates_error"]


@pytest.mark.parametrize("family,variant", [("efficientformer", "l1"), ("efficientformerv2", "s0"), ("swiftformer", "xs")])
def test_feature_info_and_features_only(family, variant, checkpoints):
    model = npformer.from_pretrained(checkpoints(family, variant))
    widths = model.config.stage_widths
    assert model.feature_info == [dict(num_chs=w, reduction=4 * 2**i, module=f"stages.{i}") for i, w in enumerate(widths)]
    x = golden.case_pixels((224, 224), 1)
    features = model.features_only(out_indices=(1, 3))
    assert features.feature_info.channels() == [widths[1], widths[3]] and features.feature_info.reduction() == [8, 32]
    maps = features(x)
    _, every = model.forward_intermediates(x)
    assert [m.shape for m in maps] == [(1, widths[1], 28, 28), (1, widths[3], 7, 7)]
    np.testing.assert_array_equal(maps[0], every[1])
    np.testing.assert_array_equal(maps[1], every[3])
    assert [m.shape[1] for m in model.forward_intermediates(x, indices=2)[1]] == widths[2:]
    assert [m.shape[1] for m in model.forward_intermediates(x, indices=[0, -1])[1]] == [widths[0], widths[3]]
    with pytest.raises(InputError, match="last n stages"):
        model.forward_intermediates(x, indices=5)
    with pytest.raises(InputError, match="stage index"):
        model.forward_intermediates(x, indices=[4])


def test_backbone_without_norm_refuses_norm(checkpoints):
    model = npformer.SwiftFormerModel.from_pretrained(checkpoints("swiftformer", "xs"))
    x = golden.case_pixels((224, 224), 1)
    final, maps = model.forward_intermediates(x)
    np.testing.assert_array_equal(final, maps[-1])
    with pytest.raises(InputError, match="no final norm"):
        model.forward_intermediates(x, norm=True)


# ---------------------------------------------------------------------------------------------
# live tier: the same against the references run here


def _oracle():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from npformer.tools.oracle import import_timm

    try:
        import_timm()
    except ImportError as err:
        pytest.skip(f"could not import timm: {err}")


@pytest.mark.parametrize("case", list(golden.BIAS_CASES))
def test_live_bias_strategy(case, checkpoints):
    _oracle()
    import torch

    torch.set_num_threads(1)
    for dtype in DTYPES:
        model, pixels = npformer_bias_case(case, dtype, checkpoints)
        reference, _ = golden.bias_reference(case, dtype)
        close(model(pixels).logits, golden.run_reference(reference, pixels, golden.BIAS_CASES[case][2]), dtype)


@pytest.mark.parametrize("case", list(golden.FEATURE_CASES))
def test_live_features(case, checkpoints):
    _oracle()
    import torch

    torch.set_num_threads(1)
    model, pixels = npformer_feature_model(case, np.float64, checkpoints)
    out = golden.feature_outputs(golden.feature_reference(case, np.float64), pixels)
    final, maps = model.forward_intermediates(pixels)
    if "error" in out:
        assert case == "l1_200"
        close(maps[3].reshape(*maps[3].shape[:2], -1).transpose(0, 2, 1), out["hooked.stages.3"], np.float64)
    else:
        close(final, out["final"], np.float64)
        for i in range(4):
            close(maps[i], out[f"maps.{i}"], np.float64)


@pytest.mark.parametrize("family,variant,built", [("efficientformer", "l1", 224), ("efficientformerv2", "s0", [224, 320]),
                                                 ("swiftformer", "xs", 224)])
def test_live_features_only_equals_timm(family, variant, built, checkpoints):
    """timm's `create_model(..., features_only=True, out_indices=(1, 3))` holding the same weights
    (EfficientFormer: a FeatureGetterNet over forward_intermediates; the others: a FeatureListNet)."""
    _oracle()
    import torch

    from npformer.tools.oracle import import_timm

    timm = import_timm()
    cfg = golden.case_config(family, variant, "timm", built)
    kwargs = {"img_size": cfg.image_hw} if family == "efficientformerv2" else {}
    net = timm.create_model(family_of(cfg).timm_names[variant], pretrained=False, features_only=True,
                            out_indices=(1, 3), **kwargs)
    weights = seeded_weights(cfg, num_heads=2, seed=0)
    own = net.state_dict()
    # FeatureListNet flattens the top-level sequentials' names: stem_0.weight, stages_1.blocks.0...
    state = {k: torch.from_numpy(np.array(weights[re.sub(r"^(stem|stages)_", r"\1.", k.removeprefix("model."))])).reshape(v.shape)
             for k, v in own.items() if not k.endswith(("num_batches_tracked", "attention_bias_idxs"))}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(("num_batches_tracked", "attention_bias_idxs")) for k in missing)
    net = net.double().eval()
    size = {"efficientformer": (224, 224), "efficientformerv2": (224, 320), "swiftformer": (256, 256)}[family]
    pixels = golden.case_pixels(size)
    with torch.no_grad():
        theirs = [m.numpy() for m in net(torch.from_numpy(pixels).double())]
    features = npformer.from_pretrained(checkpoints(family, variant, "timm", built), dtype=np.float64).features_only((1, 3))
    assert features.feature_info.channels() == net.feature_info.channels()
    assert features.feature_info.reduction() == net.feature_info.reduction()
    ours = features(pixels)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        close(a, b, np.float64)


# ---------------------------------------------------------------------------------------------
# the command line: --size H [W] and --bias-resize STRATEGY for predict, shapes and trace

DIGIT = HERE / "fixtures" / "digits" / "digit_3_705.png"
DEMO = {"efficientformer": HERE.parent / "weights" / "efficientformer-digits.safetensors",
        "efficientformerv2": HERE.parent / "weights" / "efficientformerv2-digits.safetensors"}


def cli_run(capsys, *argv):
    from npformer import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_predict_needs_a_strategy_for_another_grid(capsys):
    code, out, err = cli_run(capsys, "predict", DIGIT, "--weights", DEMO["efficientformer"], "--size", 160)
    assert code == 7 and out == "" and err.count("\n") == 1
    assert "4×4 attention grid" in err and "97–128 px" in err and "--bias-resize STRATEGY" in err


@pytest.mark.parametrize("family", list(DEMO))
@pytest.mark.parametrize("strategy", ["table", "pairwise"])
def test_cli_predict_at_another_size(capsys, family, strategy):
    """The digits model at 160 px (EfficientFormer: a 5×5 grid for its 4×4 tables) equals the API's
    model of the same strategy on the same preprocessed pixels."""
    from npformer.preprocess.selection import make_processor, processor_at_size
    from npformer.models.registry import FAMILIES

    code, out, err = cli_run(capsys, "predict", DIGIT, "--weights", DEMO[family], "--size", 160,
                             "--bias-resize", strategy, "--top", 1)
    assert code == 0, err
    header, line = out.splitlines()[:2]
    assert "at 160×160: squash to 160×160" in header
    model, metadata = npformer.load(DEMO[family], image_size=160, attention_bias_resize=strategy)
    processor = processor_at_size(make_processor(None, DEMO[family], FAMILIES[family], metadata)[0], (160, 160))[0]
    pixels = processor(str(DIGIT))["pixel_values"]
    assert pixels.shape == (1, 3, 160, 160)
    logits = model(pixels).logits[0]
    assert line.split()[1] == str(int(np.argmax(logits)))
    assert line.split()[-1] == f"{logits.max():.3f}"


def test_cli_shapes_at_another_size(capsys):
    code, out, err = cli_run(capsys, "shapes", "--variant", "l1", "--size", 320, "--bias-resize", "pairwise")
    assert code == 0, err
    assert "input [1, 3, 320, 320]" in out and "[1, 100, 448]" in out
    code, out, err = cli_run(capsys, "shapes", "--variant", "efficientformerv2-s0", "--size", 224, 320,
                             "--bias-resize", "table")
    assert code == 0, err
    assert "[1, 176, 7, 10]" in out
    code, out, err = cli_run(capsys, "shapes", "--weights", DEMO["efficientformerv2"])  # its own size: 128 px
    assert code == 0 and "input [1, 3, 128, 128]" in out


def test_cli_trace_at_another_size(capsys, tmp_path):
    from safetensors.numpy import load_file

    out_file = tmp_path / "trace.safetensors"
    code, out, err = cli_run(capsys, "trace", DIGIT, out_file, "--weights", DEMO["efficientformerv2"], "--size", 192, 160,
                             "--bias-resize", "pairwise")
    assert code == 0, err
    fixture = load_file(str(out_file))
    assert fixture["input"].shape == (1, 3, 192, 160)
    assert fixture["stages.3"].shape[2:] == (6, 5)
