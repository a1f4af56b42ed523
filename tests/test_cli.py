"""The `npformer` command line (npformer/cli.py), run in-process through `main(argv)`, plus one
subprocess run each of `python -m npformer` and the installed console script. No torch needed.

Checkpoints are the tiny 10-class fixtures in tests/fixtures/checkpoints (EfficientFormer) and
tests/fixtures/checkpoints_swiftformer (SwiftFormer); see make_checkpoints.py in each.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import npformer
from npformer import cli
from npformer import EfficientFormerConfig
from npformer.labels import imagenet_labels, label_names
from npformer.preprocess import EfficientFormerImageProcessor, ViTImageProcessor, recipe
from npformer.checkpoints.seeded import seeded_weights
from npformer.checkpoints.weights import load_weights
from tiers import heavy

FIXTURES = Path(__file__).parent / "fixtures"
CKPT = FIXTURES / "checkpoints"
SWIFT = FIXTURES / "checkpoints_swiftformer"
CATS = FIXTURES / "images" / "two_cats.png"
CHELSEA = FIXTURES / "images" / "chelsea_451x300.jpg"
TINY = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 2], num_meta3d_blocks=1, dim=32, hidden_size=32)
ROW = re.compile(r"^  +(\d+)\. +(\d+) (.+?) +(\d+\.\d\d)% +logit +(-?\d+\.\d{3})$")


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `npformer argv...` run in-process."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse_predict(out):
    """[(header, [(rank, index, label, probability %, logit), ...]), ...] from predict's output."""
    blocks = []
    for line in out.splitlines():
        if not line.strip():
            continue
        match = ROW.match(line)
        if match:
            rank, index, label, prob, logit = match.groups()
            blocks[-1][1].append((int(rank), int(index), label, float(prob), float(logit)))
        else:
            assert not line.startswith(" "), f"unparsed row: {line!r}"
            blocks.append((line, []))
    return blocks


def expected_top(weights, image, k, processor=None, dtype=np.float32, attention=None):
    """[(index, probability %, logit)] computed here, independently of the CLI."""
    model = npformer.from_pretrained(weights, dtype=dtype, attention_generation=attention)
    processor = processor or EfficientFormerImageProcessor.published()
    logits = model(processor(image)["pixel_values"]).logits[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = sorted(range(len(logits)), key=lambda i: -logits[i])[:k]
    return [(i, 100 * probs[i], logits[i]) for i in order]


def assert_matches(rows, expected, names=None):
    assert [r[0] for r in rows] == list(range(1, len(expected) + 1))
    assert [r[1] for r in rows] == [i for i, _, _ in expected]
    probs = [r[3] for r in rows]
    assert probs == sorted(probs, reverse=True)
    for (_, _, label, prob, logit), (i, p, lg) in zip(rows, expected):
        assert prob == pytest.approx(p, abs=0.006) and logit == pytest.approx(lg, abs=0.0006)
        assert label == (names[i] if names else f"class {i}")


@pytest.fixture(scope="module")
def npformer_file(tmp_path_factory):
    dst = tmp_path_factory.mktemp("converted") / "tiny.safetensors"
    npformer.convert_checkpoint(CKPT / "hf_safetensors", dst)
    return dst


def one_line_error(code, out, err, expected_code):
    assert code == expected_code, err
    assert out == ""
    assert err.startswith("npformer: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------
# predict


# the preprocessing each source gets by default: its origin's recipe (an npformer file keeps its source)
@pytest.mark.parametrize("source,preprocessing", [
    ("hf_safetensors", "efficientformer-hf"), ("original.pth", "original"), ("timm.pth", "timm"),
    ("npformer", "efficientformer-hf"),
])
def test_predict_prints_top_k_in_order(capsys, source, preprocessing, npformer_file):
    weights = npformer_file if source == "npformer" else CKPT / source
    code, out, err = run(capsys, "predict", CATS, "--weights", weights)
    assert code == 0 and err == ""
    [(header, rows)] = parse_predict(out)
    assert header == f"{CATS}  (EfficientFormerForImageClassificationWithTeacher, float32, preprocessing: {preprocessing})"
    assert_matches(rows, expected_top(weights, CATS, 5, processor=recipe(preprocessing)))


def test_predict_several_images_top_and_float64(capsys):
    weights = CKPT / "original.pth"
    code, out, _ = run(capsys, "predict", CATS, CHELSEA, "--weights", weights, "--top", 3, "--dtype", "float64")
    assert code == 0
    blocks = parse_predict(out)
    assert [h for h, _ in blocks] == [
        f"{p}  (EfficientFormerForImageClassificationWithTeacher, float64, preprocessing: original)" for p in (CATS, CHELSEA)]
    for (_, rows), image in zip(blocks, (CATS, CHELSEA)):
        assert_matches(rows, expected_top(weights, image, 3, processor=recipe("original"), dtype=np.float64))
    # aligned: every row of the output has its '%' and 'logit' in the same column
    rows = [line for line in out.splitlines() if ROW.match(line)]
    assert len({line.index("%") for line in rows}) == 1 and len({line.index("logit") for line in rows}) == 1


def test_predict_top_is_clamped_to_the_number_of_classes(capsys):
    code, out, _ = run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "-k", 50)
    assert code == 0
    [(_, rows)] = parse_predict(out)
    assert sorted(r[1] for r in rows) == list(range(10))


def test_predict_uses_the_directory_preprocessor_config(capsys, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(CKPT / "hf_safetensors", model_dir)
    own = EfficientFormerImageProcessor(size={"height": 224, "width": 224})  # squash: differs from published
    (model_dir / "preprocessor_config.json").write_text(json.dumps(own.to_dict()))
    code, out, _ = run(capsys, "predict", CATS, "--weights", model_dir)
    assert code == 0
    [(header, rows)] = parse_predict(out)
    assert header.endswith(f"preprocessing: {model_dir / 'preprocessor_config.json'} (EfficientFormerImageProcessor))")
    assert_matches(rows, expected_top(model_dir, CATS, 5, processor=own))
    published = expected_top(model_dir, CATS, 5)
    assert [r[4] for r in rows] != pytest.approx([lg for _, _, lg in published], abs=0.0006)  # the test can tell

    code, out, _ = run(capsys, "predict", CATS, "--weights", model_dir, "--processor", "published")
    assert parse_predict(out)[0][0].endswith("preprocessing: efficientformer-hf)")
    assert_matches(parse_predict(out)[0][1], published)
    code, out, _ = run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--processor", model_dir)
    assert_matches(parse_predict(out)[0][1], expected_top(CKPT / "hf_bin", CATS, 5, processor=own))
    code, out, _ = run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--processor", "default")
    assert parse_predict(out)[0][0].endswith("preprocessing: efficientformer-hf-default)")
    assert_matches(parse_predict(out)[0][1],
                   expected_top(CKPT / "hf_bin", CATS, 5, processor=EfficientFormerImageProcessor()))


@pytest.mark.parametrize("name", ["efficientformer-hf", "efficientformer-hf-default", "swiftformer-hf", "timm",
                                  "original"])
def test_predict_takes_every_recipe(capsys, name):
    code, out, _ = run(capsys, "predict", CHELSEA, "--weights", CKPT / "original.pth", "--processor", name)
    assert code == 0
    [(header, rows)] = parse_predict(out)
    assert header.endswith(f", preprocessing: {name})")
    assert_matches(rows, expected_top(CKPT / "original.pth", CHELSEA, 5, processor=recipe(name)))


def test_predict_recipes_differ(capsys):
    """The recipes the defaults pick between change the numbers, not only the header ('original'
    equals 'efficientformer-hf' on this image: they differ only in odd crop margins)."""
    logits = {}
    for name in ("efficientformer-hf", "timm", "swiftformer-hf"):
        code, out, _ = run(capsys, "predict", CHELSEA, "--weights", CKPT / "hf_bin", "--processor", name, "-k", 10)
        logits[name] = sorted((r[1], r[4]) for r in parse_predict(out)[0][1])
    assert len({tuple(v) for v in logits.values()}) == 3


def _save_tiny(path, num_labels, id2label=None, cls=npformer.EfficientFormerForImageClassificationWithTeacher):
    cfg = EfficientFormerConfig(**TINY, num_labels=num_labels, id2label=id2label)
    cls(cfg, seeded_weights(cfg, num_heads=cls.num_heads, seed=5)).save_pretrained(path)
    return path


def test_predict_shows_imagenet_names_for_1000_classes(capsys, tmp_path):
    weights = _save_tiny(tmp_path / "imagenet.safetensors", 1000)
    code, out, _ = run(capsys, "predict", CATS, "--weights", weights, "--top", 10)
    assert code == 0
    [(_, rows)] = parse_predict(out)
    assert_matches(rows, expected_top(weights, CATS, 10), names=imagenet_labels())


def test_predict_shows_the_config_names(capsys, tmp_path):
    names = [f"thing {i}" for i in range(10)]
    weights = _save_tiny(tmp_path / "named.safetensors", 10, dict(enumerate(names)))
    code, out, _ = run(capsys, "predict", CATS, "--weights", weights)
    assert_matches(parse_predict(out)[0][1], expected_top(weights, CATS, 5), names=names)


def test_predict_without_weights_uses_the_default_and_says_when_there_is_none(capsys, monkeypatch, npformer_file):
    monkeypatch.setattr(cli.common, "DEFAULT_WEIGHTS", None)  # e.g. a wheel install, without weights/
    code, out, err = run(capsys, "predict", CATS)
    assert one_line_error(code, out, err, 2) == f"npformer: error: {cli.NO_DEFAULT_WEIGHTS}\n"
    monkeypatch.setattr(cli.common, "DEFAULT_WEIGHTS", npformer_file)
    code, out, _ = run(capsys, "predict", CATS)
    assert code == 0
    assert_matches(parse_predict(out)[0][1], expected_top(npformer_file, CATS, 5))


# ---------------------------------------------------------------------------------------------
# convert


def test_convert_writes_the_file_and_refuses_to_overwrite(capsys, tmp_path):
    dst = tmp_path / "tiny.safetensors"
    code, out, err = run(capsys, "convert", CKPT / "original.pth", dst)
    assert code == 0 and err == ""
    fields = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert out.splitlines()[0] == f"converted {CKPT / 'original.pth'}"
    assert fields["source"] == "original snap-research checkpoint"
    assert fields["architecture"] == "EfficientFormerForImageClassificationWithTeacher"
    assert fields["variant"].startswith("custom (hidden_sizes [8, 16, 24, 32], depths [1, 1, 2, 2]")
    tensors, metadata = load_weights(dst)
    assert fields["tensors"] == str(len(tensors))
    buffers = sum(v.size for k, v in tensors.items() if k.endswith(("running_mean", "running_var")))
    assert fields["parameters"] == f"{sum(v.size for v in tensors.values()) - buffers:,}"
    assert fields["wrote"].startswith(str(dst))
    assert metadata["source"] == "original"

    before = dst.read_bytes()
    code, out, err = run(capsys, "convert", CKPT / "hf_bin", dst)
    assert "already exists; pass --force" in one_line_error(code, out, err, 1)
    assert dst.read_bytes() == before

    code, out, _ = run(capsys, "convert", CKPT / "hf_bin", dst, "--force")
    assert code == 0 and "transformers model directory" in out
    assert load_weights(dst)[1]["source"] == "transformers"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # no temporary left behind


def test_convert_names_the_variant(capsys, tmp_path):
    cfg = EfficientFormerConfig.variant("l1")
    src = tmp_path / "l1.safetensors"
    npformer.EfficientFormerModel(cfg, seeded_weights(cfg, num_heads=0)).save_pretrained(src)
    code, out, _ = run(capsys, "convert", src, tmp_path / "again.safetensors")
    assert code == 0
    assert "EfficientFormer-L1" in out and "npformer weight file" in out and "EfficientFormerModel" in out


def test_convert_errors(capsys, tmp_path):
    code, out, err = run(capsys, "convert", CKPT / "original.pth", tmp_path / "x.npz")
    assert ".safetensors" in one_line_error(code, out, err, 2)
    code, out, err = run(capsys, "convert", tmp_path / "missing.pth", tmp_path / "x.safetensors")
    one_line_error(code, out, err, 4)
    code, out, err = run(capsys, "convert", CKPT / "original.pth", tmp_path / "no" / "x.safetensors")
    one_line_error(code, out, err, 1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# shapes


def shape_rows(out):
    """{name: (kind, shape, elements)} from shapes' table (the MAC table after its blank line aside)."""
    rows = {}
    for line in out.split("\n\n")[0].splitlines()[3:]:
        match = re.match(r"^  (\S+)  +(.*?) *(\[[\d, ]+\]) +([\d,]+)$", line)
        assert match, line
        name, kind, shape, elements = match.groups()
        rows[name] = (kind, shape, int(elements.replace(",", "")))
    return rows


def test_shapes_l1(capsys):
    code, out, err = run(capsys, "shapes", "--variant", "l1")
    assert code == 0 and err == ""
    assert out.splitlines()[0].startswith("EfficientFormer-L1 (seeded weights)")
    rows = shape_rows(out)
    assert rows["stem"] == ("stem", "[1, 48, 56, 56]", 48 * 56 * 56)
    assert rows["stages.1.downsample"][1:] == ("[1, 96, 28, 28]", 96 * 28 * 28)
    assert rows["stages.3.blocks.2"][:2] == ("Meta4D (pool)", "[1, 448, 7, 7]")
    assert rows["stages.3.blocks.3"][:2] == ("Flat", "[1, 49, 448]")
    assert rows["stages.3.blocks.4"][:2] == ("Meta3D (attention)", "[1, 49, 448]")
    assert rows["stages.3"] == ("stage output", "[1, 49, 448]", 49 * 448)
    assert rows["pooled"][1] == "[1, 448]"
    assert rows["logits"] == ("(head + head_dist) / 2", "[1, 1000]", 1000)
    assert list(rows) == ["stem"] + [f"stages.0.blocks.{i}" for i in range(3)] + ["stages.0", "stages.1.downsample"] \
        + list(rows)[6:]
    assert list(rows)[-6:] == ["stages.3", "norm", "pooled", "head", "head_dist", "logits"]
    assert len(rows) == 1 + 15 + 3 + 4 + 6  # stem, blocks (incl. flat), downsamples, stage outputs, the rest


@pytest.mark.parametrize("variant,batch,widths,last", [
    ("l3", 1, [64, 128, 320, 512], 6), pytest.param("l7", 1, [96, 192, 384, 768], 8, marks=heavy),
])
def test_shapes_l3_l7_widths(capsys, variant, batch, widths, last):
    code, out, _ = run(capsys, "shapes", "--variant", variant, "--batch", batch)
    assert code == 0
    rows = shape_rows(out)
    assert rows["stem"][1] == f"[{batch}, {widths[0]}, 56, 56]"
    for stage, side in ((1, 28), (2, 14), (3, 7)):
        assert rows[f"stages.{stage}.downsample"][1] == f"[{batch}, {widths[stage]}, {side}, {side}]"
    assert rows["stages.3"][1] == f"[{batch}, 49, {widths[3]}]"
    assert rows[f"stages.3.blocks.{last}"][0] == "Meta3D (attention)"
    assert rows["logits"][1] == f"[{batch}, 1000]"


def test_shapes_of_a_checkpoint_and_all(capsys):
    code, out, _ = run(capsys, "shapes", "--weights", CKPT / "hf_bin", "--batch", 3)
    assert out.splitlines()[0].startswith(f"{CKPT / 'hf_bin'} (custom EfficientFormer config), ")
    rows = shape_rows(out)
    assert rows["stages.3"][1] == "[3, 49, 32]" and rows["logits"][1] == "[3, 10]"
    assert "stem.conv1" not in rows
    code, out, _ = run(capsys, "shapes", "--weights", CKPT / "hf_bin", "--all")
    rows = shape_rows(out)
    assert rows["stem.conv1"] == ("", "[1, 4, 112, 112]", 4 * 112 * 112)
    assert rows["stages.3.blocks.2.token_mixer.attn_probs"][1] == "[1, 8, 49, 49]"
    assert rows["stem"][0] == "stem"


def test_shapes_errors(capsys):
    code, out, err = run(capsys, "shapes", "--size", 100)
    assert "193–224" in one_line_error(code, out, err, 7)
    with pytest.raises(SystemExit):  # argparse itself, for the record
        cli.build_parser().parse_args(["shapes", "--variant", "l9"])
    code, out, err = run(capsys, "shapes", "--variant", "l9")
    assert code == 2 and "invalid choice" in err


# ---------------------------------------------------------------------------------------------
# SwiftFormer: predict, convert, shapes


SWIFT_HEADER = "{image}  (SwiftFormerForImageClassification, attention {gen}, float32, preprocessing: {pre})"


@pytest.mark.parametrize("source,attention,generation,preprocessing", [
    ("hf_safetensors", None, "v1", "swiftformer-hf"), ("hf_bin", None, "v1", "swiftformer-hf"),
    ("timm.pth", None, "v2", "timm"), ("original.pth", "v1", "v1", "original"), ("original.pth", "v2", "v2", "original"),
])
def test_predict_swiftformer(capsys, source, attention, generation, preprocessing):
    argv = ["predict", CATS, "--weights", SWIFT / source, "-k", 10] + (["--attention", attention] if attention else [])
    code, out, err = run(capsys, *argv)
    assert code == 0 and err == ""
    [(header, rows)] = parse_predict(out)
    assert header == SWIFT_HEADER.format(image=CATS, gen=generation, pre=preprocessing)
    assert_matches(rows, expected_top(SWIFT / source, CATS, 10, processor=recipe(preprocessing), attention=attention))


def test_predict_original_swiftformer_needs_the_attention(capsys):
    code, out, err = run(capsys, "predict", CATS, "--weights", SWIFT / "original.pth")
    message = one_line_error(code, out, err, 3)
    assert "does not say which attention" in message and "--attention v1 or --attention v2" in message
    logits = {}
    for generation in ("v1", "v2"):  # and the answer matters
        code, out, _ = run(capsys, "predict", CATS, "--weights", SWIFT / "original.pth", "--attention", generation, "-k", 10)
        logits[generation] = sorted((r[1], r[4]) for r in parse_predict(out)[0][1])
    assert max(abs(a[1] - b[1]) for a, b in zip(logits["v1"], logits["v2"])) > 1e-3


def test_predict_attention_that_contradicts_the_checkpoint(capsys):
    code, out, err = run(capsys, "predict", CATS, "--weights", SWIFT / "hf_bin", "--attention", "v2")
    assert "use attention generation v1" in one_line_error(code, out, err, 3)
    code, out, err = run(capsys, "predict", CATS, "--weights", SWIFT / "timm.pth", "--attention", "v1")
    assert "use attention generation v2" in one_line_error(code, out, err, 3)
    code, out, err = run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--attention", "v1")
    assert "SwiftFormer only" in one_line_error(code, out, err, 3)
    code, out, err = run(capsys, "predict", CATS, "--weights", SWIFT / "hf_bin", "--attention", "v3")
    assert code == 2 and "invalid choice" in err


def test_predict_swiftformer_directory_preprocessor_config(capsys, tmp_path):
    model_dir = tmp_path / "swift"
    shutil.copytree(SWIFT / "hf_safetensors", model_dir)
    # MBZUAI/swiftformer-xs's preprocessor_config.json as published (no image_processor_type): ViTImageProcessor
    published = {"do_normalize": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                 "image_std": [0.229, 0.224, 0.225], "size": 224}
    (model_dir / "preprocessor_config.json").write_text(json.dumps(published))
    code, out, _ = run(capsys, "predict", CHELSEA, "--weights", model_dir)
    assert code == 0
    [(header, rows)] = parse_predict(out)
    assert header == SWIFT_HEADER.format(image=CHELSEA, gen="v1",
                                         pre=f"{model_dir / 'preprocessor_config.json'} (ViTImageProcessor)")
    assert_matches(rows, expected_top(model_dir, CHELSEA, 5, processor=ViTImageProcessor.published_swiftformer()))
    # a config naming its class gets that class, as transformers' AutoImageProcessor does
    own = EfficientFormerImageProcessor.published()
    (model_dir / "preprocessor_config.json").write_text(json.dumps(own.to_dict()))
    code, out, _ = run(capsys, "predict", CHELSEA, "--weights", model_dir)
    [(header, rows)] = parse_predict(out)
    assert header.endswith("(EfficientFormerImageProcessor))")
    assert_matches(rows, expected_top(model_dir, CHELSEA, 5, processor=own))
    # the family-relative names
    code, out, _ = run(capsys, "predict", CHELSEA, "--weights", model_dir, "--processor", "published")
    assert parse_predict(out)[0][0].endswith("preprocessing: swiftformer-hf)")
    code, out, _ = run(capsys, "predict", CHELSEA, "--weights", model_dir, "--processor", "default")
    [(header, rows)] = parse_predict(out)
    assert header.endswith("preprocessing: default (ViTImageProcessor code defaults))")
    assert_matches(rows, expected_top(model_dir, CHELSEA, 5, processor=ViTImageProcessor()))
    # an EfficientFormer checkpoint can be given a ViT config file
    vit = tmp_path / "vit.json"
    vit.write_text(json.dumps(ViTImageProcessor.published_swiftformer().to_dict()))
    code, out, _ = run(capsys, "predict", CHELSEA, "--weights", CKPT / "hf_bin", "--processor", vit)
    assert parse_predict(out)[0][0].endswith(f"preprocessing: {vit} (ViTImageProcessor))")
    assert_matches(parse_predict(out)[0][1],
                   expected_top(CKPT / "hf_bin", CHELSEA, 5, processor=ViTImageProcessor.published_swiftformer()))


def test_predict_swiftformer_npformer_files(capsys, tmp_path):
    """Converted files keep their origin's preprocessing; seeded ones get the family's transformers recipe."""
    converted = tmp_path / "timm.safetensors"
    npformer.convert_checkpoint(SWIFT / "timm.pth", converted)
    code, out, _ = run(capsys, "predict", CATS, "--weights", converted)
    assert parse_predict(out)[0][0] == SWIFT_HEADER.format(image=CATS, gen="v2", pre="timm")
    cfg = npformer.SwiftFormerConfig(embed_dims=[4, 6, 8, 10], depths=[2, 1, 1, 2], num_labels=1000,
                                     attention_generation="v2")
    seeded = tmp_path / "seeded.safetensors"
    npformer.SwiftFormerForImageClassification(cfg, seeded_weights(cfg, 2, seed=4)).save_pretrained(seeded)
    code, out, _ = run(capsys, "predict", CATS, "--weights", seeded, "--top", 3)
    [(header, rows)] = parse_predict(out)
    assert header == SWIFT_HEADER.format(image=CATS, gen="v2", pre="swiftformer-hf")
    assert_matches(rows, expected_top(seeded, CATS, 3, processor=recipe("swiftformer-hf")), names=imagenet_labels())
    backbone = tmp_path / "backbone.safetensors"
    npformer.SwiftFormerModel(cfg, seeded_weights(cfg, 0)).save_pretrained(backbone)
    code, out, err = run(capsys, "predict", CATS, "--weights", backbone)
    assert "SwiftFormerModel with no classifier head" in one_line_error(code, out, err, 6)


def convert_fields(out):
    lines = out.splitlines()
    return lines[0], dict(line.split(None, 1) for line in lines[1:])


def test_convert_original_swiftformer_needs_the_attention(capsys, tmp_path):
    dst = tmp_path / "swift.safetensors"
    code, out, err = run(capsys, "convert", SWIFT / "original.pth", dst)
    message = one_line_error(code, out, err, 3)
    assert message.startswith(f"npformer: error: {SWIFT / 'original.pth'}: an original SwiftFormer checkpoint does not "
                              "say which attention it was trained with")
    assert "--attention v1 or --attention v2" in message and "2023-07-26" in message
    assert list(tmp_path.iterdir()) == []

    for generation, description in (("v1", "softmax over a size-1 axis"), ("v2", "L2 normalisation over tokens")):
        code, out, err = run(capsys, "convert", SWIFT / "original.pth", dst, "--attention", generation, "--force")
        assert code == 0 and err == ""
        first, fields = convert_fields(out)
        assert first == f"converted {SWIFT / 'original.pth'}"
        assert fields["source"] == "original Amshaker/SwiftFormer checkpoint"
        assert fields["architecture"] == "SwiftFormerForImageClassification"
        assert fields["variant"] == "custom (embed_dims [4, 6, 8, 10], depths [2, 1, 1, 2])"
        assert fields["attention"].startswith(f"{generation} (given by --attention {generation}): {description}")
        assert fields["num_labels"] == "10"
        tensors, metadata = load_weights(dst)
        assert fields["tensors"] == str(len(tensors)) == "180"
        assert metadata["attention_generation"] == generation and metadata["source"] == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swift.safetensors"]

    again = tmp_path / "again.safetensors"  # an npformer file says which generation it holds
    code, out, _ = run(capsys, "convert", dst, again)
    _, fields = convert_fields(out)
    assert fields["source"] == "npformer weight file, converted from an original Amshaker/SwiftFormer checkpoint"
    assert fields["attention"].startswith("v2 (as the npformer file records)")
    code, out, err = run(capsys, "convert", dst, again, "--force", "--attention", "v1")
    assert "plausible but wrong logits" in one_line_error(code, out, err, 6)


@pytest.mark.parametrize("source,kind,generation", [
    ("hf_bin", "transformers model directory", "v1"), ("hf_safetensors", "transformers model directory", "v1"),
    ("timm.pth", "timm checkpoint", "v2"),
])
def test_convert_swiftformer_sources(capsys, tmp_path, source, kind, generation):
    dst = tmp_path / "swift.safetensors"
    code, out, _ = run(capsys, "convert", SWIFT / source, dst)
    assert code == 0
    _, fields = convert_fields(out)
    assert fields["source"] == kind
    assert fields["attention"].startswith(f"{generation} ({kind.split()[0]} checkpoints are always {generation})")
    assert load_weights(dst)[1]["attention_generation"] == generation
    other = "v2" if generation == "v1" else "v1"
    code, out, err = run(capsys, "convert", SWIFT / source, dst, "--force", "--attention", other)
    assert f"use attention generation {generation}" in one_line_error(code, out, err, 3)


def test_convert_names_the_swiftformer_variant_and_refuses_attention_for_efficientformer(capsys, tmp_path):
    cfg = npformer.SwiftFormerConfig.variant("s", attention_generation="v2")
    src = tmp_path / "s.safetensors"
    npformer.SwiftFormerModel(cfg, seeded_weights(cfg, num_heads=0)).save_pretrained(src)
    code, out, _ = run(capsys, "convert", src, tmp_path / "again.safetensors")
    _, fields = convert_fields(out)
    assert fields["variant"] == "SwiftFormer-S" and fields["architecture"] == "SwiftFormerModel"
    assert fields["attention"].startswith("v2 (as the npformer file records)")
    code, out, err = run(capsys, "convert", CKPT / "original.pth", tmp_path / "ef.safetensors", "--attention", "v1")
    assert "SwiftFormer only" in one_line_error(code, out, err, 3)


def test_shapes_swiftformer_xs(capsys):
    code, out, err = run(capsys, "shapes", "--variant", "swiftformer-xs")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == ("SwiftFormer-XS (seeded weights), SwiftFormerForImageClassification, "
                                   "3,475,360 parameters, input [1, 3, 224, 224]")
    rows = shape_rows(out)
    assert rows["stem"] == ("stem", "[1, 48, 56, 56]", 48 * 56 * 56)
    assert rows["stages.0.blocks.0"][:2] == ("ConvEncoder", "[1, 48, 56, 56]")
    assert rows["stages.0.blocks.2"][:2] == ("encoder (additive attention)", "[1, 48, 56, 56]")
    assert rows["stages.1.downsample"][:2] == ("downsample", "[1, 56, 28, 28]")
    assert rows["stages.2"][1] == "[1, 112, 14, 14]"
    assert rows["stages.3"] == ("stage output", "[1, 220, 7, 7]", 220 * 49)
    assert rows["norm"][:2] == ("BatchNorm", "[1, 220, 7, 7]")
    assert rows["pooled"][:2] == ("mean over positions", "[1, 220]")
    assert rows["logits"] == ("(head + head_dist) / 2", "[1, 1000]", 1000)
    blocks = [name for name in rows if ".blocks." in name]
    assert len(blocks) == 3 + 3 + 6 + 4 and [rows[b][0] for b in blocks].count("encoder (additive attention)") == 4
    assert list(rows)[-6:] == ["stages.3", "norm", "pooled", "head", "head_dist", "logits"]
    assert list(rows)[:6] == ["stem", "stages.0.blocks.0", "stages.0.blocks.1", "stages.0.blocks.2", "stages.0",
                              "stages.1.downsample"]


@pytest.mark.parametrize("size,sides", [
    (["160"], [(40, 40), (20, 20), (10, 10), (5, 5)]), (["256"], [(64, 64), (32, 32), (16, 16), (8, 8)]),
    (["96", "128"], [(24, 32), (12, 16), (6, 8), (3, 4)]),
])
def test_shapes_swiftformer_any_size(capsys, size, sides):
    code, out, _ = run(capsys, "shapes", "--variant", "swiftformer-xs", "--size", *size, "--batch", 2)
    assert code == 0
    rows = shape_rows(out)
    assert out.splitlines()[0].endswith(f"input [2, 3, {size[0]}, {size[-1]}]")
    for stage, (width, (h, w)) in enumerate(zip([48, 56, 112, 220], sides)):
        assert rows[f"stages.{stage}"][1] == f"[2, {width}, {h}, {w}]"
    assert rows["logits"][1] == "[2, 1000]"


def test_shapes_variant_names(capsys):
    code, bare, _ = run(capsys, "shapes", "--variant", "l3")
    code, prefixed, _ = run(capsys, "shapes", "--variant", "efficientformer-l3")
    assert code == 0 and bare == prefixed and bare.startswith("EfficientFormer-L3 (seeded weights)")
    code, out, _ = run(capsys, "shapes", "--variant", "swiftformer-l3")
    assert code == 0 and out.startswith("SwiftFormer-L3 (seeded weights)")
    assert shape_rows(out)["stages.3"][1] == "[1, 512, 7, 7]"
    code, out, err = run(capsys, "shapes", "--variant", "xs")
    assert code == 2 and "swiftformer-xs" in err  # the choices are listed
    code, out, err = run(capsys, "shapes", "--variant", "l1", "--attention", "v1")
    assert "SwiftFormer only" in one_line_error(code, out, err, 3)
    code, out, err = run(capsys, "shapes", "--size", 1, 2, 3)
    assert "HEIGHT WIDTH" in one_line_error(code, out, err, 2)


def test_shapes_of_swiftformer_checkpoints(capsys, tmp_path):
    code, out, err = run(capsys, "shapes", "--weights", SWIFT / "original.pth")
    assert "--attention v1 or --attention v2" in one_line_error(code, out, err, 3)
    code, out, _ = run(capsys, "shapes", "--weights", SWIFT / "original.pth", "--attention", "v2", "--size", 96, 128)
    assert out.splitlines()[0].startswith(f"{SWIFT / 'original.pth'} (custom SwiftFormer config), "
                                          "SwiftFormerForImageClassification, 6,840 parameters")
    rows = shape_rows(out)
    assert rows["stages.3"][1] == "[1, 10, 3, 4]" and rows["logits"][1] == "[1, 10]"
    assert rows["stages.0.blocks.1"][0] == "encoder (additive attention)"
    code, out, _ = run(capsys, "shapes", "--weights", SWIFT / "hf_bin", "--all", "--size", 64)
    rows = shape_rows(out)
    assert rows["stages.0.blocks.1.attn"] == ("", "[1, 256, 4]", 1024)  # tokens [B, N, C]
    assert rows["stages.0.blocks.1.attn.weights"][1] == "[1, 256, 1]"
    cfg = npformer.SwiftFormerConfig.variant("xs")
    backbone = tmp_path / "backbone.safetensors"
    npformer.SwiftFormerModel(cfg, seeded_weights(cfg, 0)).save_pretrained(backbone)
    code, out, _ = run(capsys, "shapes", "--weights", backbone)
    rows = shape_rows(out)
    assert out.startswith(f"{backbone} (SwiftFormer-XS), SwiftFormerModel, ")
    assert list(rows)[-1] == "stages.3" and "norm" not in rows and "logits" not in rows


# ---------------------------------------------------------------------------------------------
# errors: one line on stderr, the error's exit code


def test_missing_and_undecodable_images_exit_8(capsys, tmp_path):
    code, out, err = run(capsys, "predict", tmp_path / "nope.png", "--weights", CKPT / "hf_bin")
    assert "nope.png" in one_line_error(code, out, err, 8)
    (tmp_path / "text.png").write_text("not an image")
    code, out, err = run(capsys, "predict", CATS, tmp_path / "text.png", "--weights", CKPT / "hf_bin")
    one_line_error(code, out, err, 8)  # nothing printed for the good first image either


def test_bad_weight_files(capsys, tmp_path, npformer_file):
    def predict(weights):
        return run(capsys, "predict", CATS, "--weights", weights)

    assert "no such file" in one_line_error(*predict(tmp_path / "missing.pth"), 4)
    (tmp_path / "garbage.pth").write_bytes(os.urandom(2000))
    one_line_error(*predict(tmp_path / "garbage.pth"), 4)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    one_line_error(*predict(tmp_path / "garbage.safetensors"), 4)
    (tmp_path / "empty").mkdir()
    one_line_error(*predict(tmp_path / "empty"), 4)

    tensors, metadata = load_weights(npformer_file)
    wrong = dict(tensors, **{"head.weight": np.zeros((11, 32), np.float32)})
    save_file(wrong, str(tmp_path / "wrong_shape.safetensors"), metadata=metadata)
    assert "head.weight" in one_line_error(*predict(tmp_path / "wrong_shape.safetensors"), 6)

    config = json.loads(metadata["config"]) | {"hidden_act": "swish"}
    save_file(tensors, str(tmp_path / "bad_config.safetensors"), metadata=metadata | {"config": json.dumps(config)})
    assert "hidden_act" in one_line_error(*predict(tmp_path / "bad_config.safetensors"), 3)


def test_unsafe_pickle_exits_5_without_running_it(capsys, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/version", b"3\n")
    code, out, err = run(capsys, "predict", CATS, "--weights", evil)
    assert "os.system" in one_line_error(code, out, err, 5)
    code, out, err = run(capsys, "convert", evil, tmp_path / "out.safetensors")
    one_line_error(code, out, err, 5)
    assert not marker.exists()


def test_processor_and_input_errors(capsys, tmp_path):
    code, out, err = run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--processor", tmp_path / "none.json")
    one_line_error(code, out, err, 3)
    small = tmp_path / "small.json"
    small.write_text(json.dumps(EfficientFormerImageProcessor(size=64, crop_size=64).to_dict()))
    code, out, err = run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--processor", small)
    assert "64×64" in one_line_error(code, out, err, 7)


def test_backbone_checkpoint_cannot_predict(capsys, tmp_path):
    weights = _save_tiny(tmp_path / "backbone.safetensors", 10, cls=npformer.EfficientFormerModel)
    code, out, err = run(capsys, "predict", CATS, "--weights", weights)
    assert "no classifier head" in one_line_error(code, out, err, 6)


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--top", 0)[0] == 2
    assert run(capsys, "predict", CATS, "--weights", CKPT / "hf_bin", "--dtype", "float16")[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    code, out, err = run(capsys)
    assert code == 2 and "required" in err
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"npformer {npformer.__version__}\n"


def test_unexpected_exceptions_keep_their_traceback(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_shapes", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["shapes"])


# ---------------------------------------------------------------------------------------------
# parity (the comparison itself needs torch: only the wiring is tested here)


def _installed(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # set to None in sys.modules
        return False


@pytest.mark.parametrize("hidden", [("torch",), ("transformers",), ("timm",), ("torch", "timm")])
def test_parity_without_the_oracle_extra(capsys, monkeypatch, hidden):
    missing = ", ".join(m for m in ("torch", "transformers", "timm") if m in hidden or not _installed(m))
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    code, out, err = run(capsys, "parity")
    assert one_line_error(code, out, err, 2) == (
        f"npformer: error: npformer parity needs the oracle extra (torch, transformers and timm; missing: {missing}): "
        "pip install 'npformer[oracle]'\n")


def test_parity_forwards_its_arguments(capsys, monkeypatch):
    import npformer.tools.parity

    calls = []
    monkeypatch.setattr(cli.oracle, "missing_extras", lambda: [])
    monkeypatch.setattr(npformer.tools.parity, "parity_table", lambda **kw: calls.append(kw))
    assert run(capsys, "parity", "--variants", "l1", "l7", "--batch", 2)[0] == 0
    assert run(capsys, "parity")[0] == 0
    assert run(capsys, "parity", "--families", "swiftformer", "--variants", "xs", "s", "--references", "timm",
               "--batch", 1, 4, 8)[0] == 0
    assert run(capsys, "parity", "--families", "efficientformer", "--references", "transformers")[0] == 0
    every, refs = ("efficientformer", "swiftformer", "efficientformerv2"), ("transformers", "timm")
    assert calls == [
        dict(families=every, variants=("l1", "l7"), references=refs, batches=(2,)),
        dict(families=every, variants=None, references=refs, batches=(1, 4)),
        dict(families=("swiftformer",), variants=("xs", "s"), references=("timm",), batches=(1, 4, 8)),
        dict(families=("efficientformer",), variants=None, references=("transformers",), batches=(1, 4)),
    ]
    # every forwarded selection names real cases of parity.CASES
    for call in calls:
        assert any(f in call["families"] and r in call["references"] and (call["variants"] is None or v in call["variants"])
                   for f, v, r, _ in npformer.tools.parity.CASES)


def test_parity_usage_errors(capsys, monkeypatch):
    monkeypatch.setattr(cli.oracle, "missing_extras", lambda: pytest.fail("checked the extras before the arguments"))
    code, out, err = run(capsys, "parity", "--families", "efficientformer", "--variants", "xs")
    assert "no parity case" in one_line_error(code, out, err, 2)
    for argv in (["--variants", "l9"], ["--families", "vit"], ["--references", "onnx"], ["--batch", 0]):
        code, out, err = run(capsys, "parity", *argv)
        assert code == 2 and "npformer parity: error: argument" in err


# ---------------------------------------------------------------------------------------------
# labels


def test_imagenet_labels():
    classic, simple = imagenet_labels(), imagenet_labels("simple")
    assert len(classic) == len(simple) == 1000
    assert classic[281] == "tabby, tabby cat" and simple[281] == "tabby cat"
    assert classic[0] == "tench, Tinca tinca"
    with pytest.raises(ValueError):
        imagenet_labels("fancy")


def test_label_names_rule():
    placeholders = {i: f"LABEL_{i}" for i in range(1000)}
    assert label_names(EfficientFormerConfig.variant("l1")) == imagenet_labels()
    assert label_names(EfficientFormerConfig.variant("l1", id2label=placeholders)) == imagenet_labels()
    real = placeholders | {5: "five"}
    names = label_names(EfficientFormerConfig.variant("l1", id2label=real))
    assert names[5] == "five" and names[6] == "LABEL_6"
    assert label_names(EfficientFormerConfig(**TINY, num_labels=3)) == ["class 0", "class 1", "class 2"]
    assert label_names(EfficientFormerConfig(**TINY, num_labels=2, id2label={0: "cat", 1: "dog"})) == ["cat", "dog"]
    assert label_names(npformer.from_pretrained(CKPT / "hf_bin").config) == [f"class {i}" for i in range(10)]


# ---------------------------------------------------------------------------------------------
# as a program


def test_python_m_npformer_help():
    result = subprocess.run([sys.executable, "-m", "npformer", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: npformer ")
    for command in ("predict", "convert", "shapes", "parity", "SwiftFormer", "--attention v1"):
        assert command in result.stdout


@pytest.mark.parametrize("command,needles", [
    ("predict", ["--attention", "swiftformer-hf", "RECIPE_OR_PATH", "SwiftFormer takes any size"]),
    ("convert", ["--attention", "exit status 3"]),
    ("shapes", ["swiftformer-xs", "HEIGHT WIDTH", "--attention"]),
    ("parity", ["--families", "--references", "timm"]),
])
def test_command_help(capsys, command, needles):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    for needle in needles:
        assert needle in " ".join(out.split()), needle


def test_console_script(tmp_path):
    here = str(Path(sys.executable).parent)  # the venv's bin, even if it is not on PATH
    script = shutil.which("npformer", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if script is None:
        pytest.skip("the npformer console script is not installed")
    result = subprocess.run([script, "predict", tmp_path / "nope.png", "--weights", CKPT / "hf_bin"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 8 and result.stdout == ""
    assert result.stderr == f"npformer: error: {tmp_path / 'nope.png'}: no such file\n"
