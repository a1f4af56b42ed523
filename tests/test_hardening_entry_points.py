"""Hostile arguments at every entry point: each is refused with a specific npformer error that
names the argument or the file (npformer/arguments.py, npformer/jsonfile.py), or taken and gives
exactly what it says; never a raw crash from pathlib, json, NumPy or safetensors, and never a
silent answer (the current directory taken for "", a file called "None" written, a timm folder
loaded as another model than its config.json names).

The corpus is classified as the fuzz tests classify: each case is "refused" (an NpformerError of
the expected class), a "raw crash" (any other exception) or a "silent answer" (no error where one
was due); OUTCOMES holds the counts, and each case asserts its own. Everything runs offline in
tmp_path (hub caches are built locally: tests/hub_cache.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npformer
from npformer import cli
from npformer.errors import CheckpointMismatchError, ConfigError, NpformerError, WeightFileError

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "checkpoints" / "hf_safetensors"  # a transformers directory, EfficientFormer 10 classes
DIGIT = ROOT / "tests" / "fixtures" / "digits" / "digit_3_705.png"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
OUTCOMES = {"refused": 0, "raw crash": 0, "silent answer": 0, "taken": 0}  # every corpus case, by outcome


def outcome(call, expected=NpformerError, needles=()):
    """Run `call`; count and return ("refused", error) for an `expected` error naming each needle,
    else fail the test as a raw crash or a silent answer."""
    try:
        result = call()
    except expected as err:
        message = str(err)
        missing = [n for n in needles if str(n) not in message]
        assert not missing, f"the message does not name {missing}: {message}"
        assert "\n" not in message.strip() or len(message) < 2000
        OUTCOMES["refused"] += 1
        return "refused", err
    except Exception as err:  # noqa: BLE001 - what this corpus exists to catch
        OUTCOMES["raw crash"] += 1
        pytest.fail(f"raw crash: {type(err).__name__}: {err}")
    OUTCOMES["silent answer"] += 1
    pytest.fail(f"silent answer: {result!r:.200}")


@pytest.fixture(scope="module")
def model():
    return npformer.from_pretrained(TINY)


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory):
    """A timm hub directory of efficientformerv2_s0 (seeded weights), as npformer exports it."""
    directory = tmp_path_factory.mktemp("timm") / "efficientformerv2_s0"
    npformer.create_model("efficientformerv2_s0").model.save_pretrained(directory, format="timm")
    return directory


def in_directory(monkeypatch, directory: Path) -> Path:
    monkeypatch.chdir(directory)
    return directory


# ---------------------------------------------------------------------------------------------
# the issue's examples, each failing before the shared checks


LOADERS = {
    "npformer.from_pretrained": npformer.from_pretrained,
    "npformer.load": npformer.load,
    "Model.from_pretrained": npformer.EfficientFormerForImageClassification.from_pretrained,
    "AutoConfig": npformer.AutoConfig.from_pretrained,
    "AutoModel": npformer.AutoModel.from_pretrained,
    "AutoModelForImageClassification": npformer.AutoModelForImageClassification.from_pretrained,
    "AutoImageProcessor": npformer.AutoImageProcessor.from_pretrained,
    "Config.from_pretrained": npformer.EfficientFormerConfig.from_pretrained,
}


@pytest.mark.parametrize("name", LOADERS)
def test_the_empty_path_is_not_the_current_directory(tmp_path, monkeypatch, name):
    here = in_directory(monkeypatch, tmp_path)
    for f in TINY.iterdir():
        shutil.copy(f, here)
    (here / "preprocessor_config.json").write_text(json.dumps(npformer.EfficientFormerImageProcessor.published().to_dict()))
    outcome(lambda: LOADERS[name](""), ConfigError, ["path=''", "an empty path"])


def test_create_model_hf_hub_without_a_repo_is_refused(tmp_path, monkeypatch, timm_dir):
    here = in_directory(monkeypatch, tmp_path)
    for f in timm_dir.iterdir():
        shutil.copy(f, here)  # the current directory holds a timm repo: "hf-hub:" would read it
    outcome(lambda: npformer.create_model("hf-hub:", pretrained=True), ConfigError, ["'hf-hub:'", "names no hub repo"])


def test_save_pretrained_to_the_empty_path_leaves_the_current_directory_alone(tmp_path, monkeypatch, model):
    here = in_directory(monkeypatch, tmp_path)
    (here / "config.json").write_text('{"mine": true}\n')
    for fmt in ("transformers", "timm", "npformer"):
        outcome(lambda: model.save_pretrained("", format=fmt), ConfigError, ["''", "an empty path"])
    assert sorted(p.name for p in here.iterdir()) == ["config.json"]
    assert (here / "config.json").read_text() == '{"mine": true}\n'


@pytest.mark.parametrize("name", LOADERS)
def test_none_as_a_path_is_named(name):
    outcome(lambda: LOADERS[name](None), ConfigError, ["path=None", "expected a file or directory path"])


def test_save_pretrained_none_writes_no_file_called_none(tmp_path, monkeypatch, model):
    in_directory(monkeypatch, tmp_path)
    outcome(lambda: model.save_pretrained(None), ConfigError, ["path=None"])
    assert list(tmp_path.iterdir()) == []


def test_a_timm_folder_naming_another_architecture_is_refused_by_every_loader(tmp_path, monkeypatch, timm_dir):
    folder = tmp_path / "mislabelled"
    shutil.copytree(timm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architecture": "efficientformerv2_s1"}))
    needles = ["efficientformerv2_s1", "EfficientFormerV2 S0"]
    for load in (npformer.AutoModelForImageClassification.from_pretrained, npformer.AutoModel.from_pretrained,
                 npformer.from_pretrained, npformer.EfficientFormerV2ForImageClassificationWithTeacher.from_pretrained):
        outcome(lambda: load(folder), CheckpointMismatchError, needles)
    outcome(lambda: npformer.convert_checkpoint(folder, tmp_path / "out.safetensors"), CheckpointMismatchError, needles)
    assert not (tmp_path / "out.safetensors").exists()
    # and a folder whose config.json says another class count
    (folder / "config.json").write_text(json.dumps(config | {"num_classes": 10}))
    outcome(lambda: npformer.AutoModelForImageClassification.from_pretrained(folder), CheckpointMismatchError,
            ["num_classes=10", "1000 classes"])


def test_create_model_refuses_the_same_mislabelled_folder_from_the_hub_cache(tmp_path, monkeypatch, timm_dir):
    pytest.importorskip("huggingface_hub")
    from hub_cache import add_directory, offline_hub

    folder = tmp_path / "mislabelled"
    shutil.copytree(timm_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architecture": "efficientformerv2_s1"}))
    cache = offline_hub(monkeypatch, tmp_path / "home")
    add_directory(cache, "timm/efficientformerv2_s1.snap_dist_in1k", folder)
    outcome(lambda: npformer.create_model("hf-hub:timm/efficientformerv2_s1.snap_dist_in1k", pretrained=True),
            CheckpointMismatchError, ["efficientformerv2_s1"])


@pytest.mark.parametrize("where", ["an existing directory", "a trailing slash", "a missing parent"])
def test_save_pretrained_npformer_format_refuses_what_is_no_file_path(tmp_path, model, where):
    path = {"an existing directory": tmp_path, "a trailing slash": f"{tmp_path / 'new'}/",
            "a missing parent": tmp_path / "missing" / "m.safetensors"}[where]
    before = sorted(tmp_path.rglob("*"))
    outcome(lambda: model.save_pretrained(path), NpformerError, ["path=", ".safetensors"] if where != "a missing parent"
            else ["does not exist"])
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("load", [npformer.EfficientFormerConfig.from_pretrained, npformer.AutoConfig.from_pretrained,
                                  npformer.from_pretrained, npformer.AutoModelForImageClassification.from_pretrained])
def test_a_config_nested_200000_levels_deep_is_a_config_error(tmp_path, load):
    shutil.copytree(TINY, tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    outcome(lambda: load(tmp_path / "m"), ConfigError, ["config.json", "200,000 levels deep"])


@pytest.mark.parametrize("load", [npformer.from_pretrained, npformer.AutoModelForImageClassification.from_pretrained,
                                  npformer.EfficientFormerForImageClassification.from_pretrained,
                                  npformer.AutoConfig.from_pretrained])
def test_revision_3_is_named(load):
    outcome(lambda: load(TINY, revision=3), ConfigError, ["revision=3", "branch, tag or commit"])


@pytest.mark.parametrize("load", [npformer.from_pretrained, npformer.AutoModelForImageClassification.from_pretrained,
                                  npformer.EfficientFormerForImageClassification.from_pretrained])
def test_dtype_bfloat16_is_named(load):
    outcome(lambda: load(TINY, dtype="bfloat16"), ConfigError, ["dtype='bfloat16'", "np.float32 or np.float64"])


def test_dtype_bfloat16_in_create_model_is_named():
    outcome(lambda: npformer.create_model("efficientformerv2_s0", dtype="bfloat16"), ConfigError, ["dtype='bfloat16'"])


@pytest.mark.parametrize("make", ["TorchvisionEvalTransform.timm", "create_transform", "eval_transform"])
def test_crop_pct_nan_is_named(make):
    from npformer.preprocess import TorchvisionEvalTransform
    from npformer.timm.data import create_transform, eval_transform

    call = {"TorchvisionEvalTransform.timm": lambda: TorchvisionEvalTransform.timm(crop_pct=float("nan")),
            "create_transform": lambda: create_transform(224, crop_pct=float("nan")),
            "eval_transform": lambda: eval_transform(224, "bicubic", crop_pct=float("nan"))}[make]
    outcome(call, ConfigError, ["crop_pct=nan", "finite number > 0"])


def test_the_exercise_checker_fails_a_function_that_writes_into_cfg():
    from npformer.exercises import check
    from npformer.exercises.assemble import meta4d_block

    def sneaky(x, weights, cfg):
        y = meta4d_block(x, weights, cfg)
        cfg.layer_norm_eps = 1e-3  # writes into the caller's config, after computing the right answer
        return y

    result = check("meta4d_block", sneaky, quiet=True)
    assert result.status == "mutated" and not result.passed, result
    assert "changed its input cfg in place" in result.diagnosis and "dataclasses.replace" in result.diagnosis
    assert check("meta4d_block", meta4d_block, quiet=True).passed  # the reference itself still passes


def test_the_exercise_checker_sees_writes_into_a_dict_entry_and_new_keys():
    from npformer.exercises import check
    from npformer.exercises.assemble import meta4d_block

    def adds_a_key(x, weights, cfg):
        y = meta4d_block(x, weights, cfg)
        weights["scratch"] = np.zeros(1)
        return y

    def casts_in_place(x, weights, cfg):
        y = meta4d_block(x, weights, cfg)
        weights["mlp.fc1.weight"] = weights["mlp.fc1.weight"].astype(np.float64)  # same values, another dtype
        return y

    for fn in (adds_a_key, casts_in_place):
        result = check("meta4d_block", fn, quiet=True)
        assert result.status == "mutated" and "weights" in result.diagnosis, result


# ---------------------------------------------------------------------------------------------
# the corpus: every loader × hostile path values


def hostile_paths(tmp: Path) -> dict:
    """{label: (value, expected error class, what the message names)}."""
    a_file = tmp / "notes.txt"
    a_file.write_text("not a checkpoint\n")
    empty_dir = tmp / "empty"
    empty_dir.mkdir(exist_ok=True)
    dangling = tmp / "dangling.safetensors"
    loop = tmp / "loop"
    for link, target in ((dangling, tmp / "gone.safetensors"), (loop, loop)):
        if not link.is_symlink():
            link.symlink_to(target)
    return {
        "None": (None, ConfigError, ["None"]),
        "empty string": ("", ConfigError, ["''"]),
        "int": (3, ConfigError, ["=3", "got int"]),
        "float": (2.5, ConfigError, ["=2.5"]),
        "bytes": (b"model.safetensors", ConfigError, ["got bytes"]),
        "list": ([str(TINY)], ConfigError, ["got list"]),
        "NUL byte": ("model\x00.safetensors", ConfigError, ["NUL byte"]),
        "file with a trailing slash": (f"{a_file}/", ConfigError, ["a directory", "notes.txt"]),
        "dangling symlink": (dangling, WeightFileError, ["dangling.safetensors", "symbolic link to nothing"]),
        "symlink loop": (loop, WeightFileError, ["loop", "symbolic link to nothing"]),
        "missing file": (tmp / "missing.safetensors", NpformerError, ["missing.safetensors"]),
        "missing parent": (tmp / "no" / "such" / "m.safetensors", NpformerError, ["m.safetensors"]),
        "hub-like a/b/c": ("a/b/c", NpformerError, ["a/b/c"]),
        "directory without config.json": (empty_dir, NpformerError, ["empty"]),
        "a text file": (a_file, NpformerError, ["notes.txt"]),
    }


def _convert(src):
    return npformer.convert_checkpoint(src, _SCRATCH["dst"])


def _export(src):
    from npformer.checkpoints.export import export_checkpoint

    return export_checkpoint(src, _SCRATCH["dir"], "transformers")


def _create(src):
    return npformer.create_model("efficientformer_l1", checkpoint_path=src)


_SCRATCH = {}
CORPUS_LOADERS = {**LOADERS, "convert_checkpoint": _convert, "export_checkpoint": _export,
                  "create_model(checkpoint_path=)": _create,
                  "ViTImageProcessor.from_pretrained": npformer.ViTImageProcessor.from_pretrained}
PATH_CASES = ["None", "empty string", "int", "float", "bytes", "list", "NUL byte", "file with a trailing slash",
              "dangling symlink", "symlink loop", "missing file", "missing parent", "hub-like a/b/c",
              "directory without config.json", "a text file"]


@pytest.mark.parametrize("case", PATH_CASES)
@pytest.mark.parametrize("loader", CORPUS_LOADERS)
def test_every_loader_refuses_every_hostile_path(tmp_path, loader, case):
    _SCRATCH.update(dst=tmp_path / "out.safetensors", dir=tmp_path / "exported")
    value, expected, needles = hostile_paths(tmp_path)[case]
    if loader == "create_model(checkpoint_path=)" and value is None:
        pytest.skip("checkpoint_path=None means 'no local file': the default, taken")
    outcome(lambda: CORPUS_LOADERS[loader](value), expected, needles)
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "exported").exists()


# ---------------------------------------------------------------------------------------------
# options: types and values


BAD_OPTIONS = {
    "revision=3": ({"revision": 3}, ["revision=3"]),
    "revision=''": ({"revision": ""}, ["revision=''"]),
    "revision=b'main'": ({"revision": b"main"}, ["revision=b'main'"]),
    "token=3": ({"token": 3}, ["token=3"]),
    "token=''": ({"token": ""}, ["token=''"]),
    "cache_dir=3": ({"cache_dir": 3}, ["cache_dir=3"]),
    "cache_dir=a file": ({"cache_dir": DIGIT}, ["cache_dir=", "is a file"]),
    "local_files_only='yes'": ({"local_files_only": "yes"}, ["local_files_only='yes'"]),
    "local_files_only=None": ({"local_files_only": None}, ["local_files_only=None"]),
}


@pytest.mark.parametrize("option", BAD_OPTIONS)
@pytest.mark.parametrize("loader", ["AutoConfig", "AutoModelForImageClassification", "AutoImageProcessor",
                                    "Config.from_pretrained", "npformer.from_pretrained", "Model.from_pretrained"])
def test_hub_options_of_the_wrong_type_are_named(loader, option):
    options, needles = BAD_OPTIONS[option]
    outcome(lambda: LOADERS[loader](TINY, **options), ConfigError, needles)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8", None, 3, np.complex64, "complex128"])
@pytest.mark.parametrize("loader", ["AutoModelForImageClassification", "AutoModel", "npformer.from_pretrained"])
def test_dtypes_npformer_does_not_compute_in_are_named(loader, dtype):
    outcome(lambda: LOADERS[loader](TINY, dtype=dtype), ConfigError, ["dtype=", "np.float32 or np.float64"])


@pytest.mark.parametrize("kwargs,needles", [
    ({"model_name": None}, ["model_name must be a string"]),
    ({"model_name": 3}, ["model_name must be a string"]),
    ({"model_name": ""}, ["unknown model ''"]),
    ({"model_name": "hf-hub:"}, ["names no hub repo"]),
    ({"model_name": "hf_hub:@main"}, ["names no hub repo"]),
    ({"model_name": "efficientformer_l9"}, ["unknown model 'efficientformer_l9'"]),
    ({"model_name": "efficientformerv2_s0", "pretrained": "yes"}, ["pretrained='yes'"]),
    ({"model_name": "efficientformerv2_s0", "fuse": 1}, ["fuse=1"]),
    ({"model_name": "efficientformerv2_s0", "features_only": None}, ["features_only=None"]),
    ({"model_name": "efficientformerv2_s0", "num_classes": -1}, ["num_classes=-1"]),
    ({"model_name": "efficientformerv2_s0", "num_classes": "10"}, ["num_classes='10'"]),
    ({"model_name": "efficientformerv2_s0", "num_classes": 2.5}, ["num_classes=2.5"]),
    ({"model_name": "efficientformerv2_s0", "pretrained_cfg": "cfg"}, ["pretrained_cfg='cfg'"]),
    ({"model_name": "efficientformerv2_s0", "pretrained_cfg_overlay": ["file"]}, ["pretrained_cfg_overlay="]),
    ({"model_name": "efficientformerv2_s0", "pretrained": True, "pretrained_cfg_overlay": {"file": ""}},
     ["pretrained_cfg_overlay['file']=''"]),
    ({"model_name": "efficientformerv2_s0", "dtype": np.float16}, ["dtype="]),
    ({"model_name": "efficientformerv2_s0", "cache_dir": 3, "pretrained": True}, ["cache_dir=3"]),
])
def test_create_model_refuses_wrong_options(kwargs, needles):
    outcome(lambda: npformer.create_model(**kwargs), ConfigError, needles)


def test_the_options_that_are_fine_are_taken(tmp_path):
    """Controls: the same checks take what they should (a Path, ".", np.dtype, "float64", the hub options)."""
    cfg = npformer.AutoConfig.from_pretrained(TINY, revision="main", token=False, local_files_only=True,
                                              cache_dir=tmp_path)
    assert cfg == npformer.EfficientFormerConfig.from_pretrained(str(TINY) + os.sep)  # a directory may end in "/"
    assert npformer.AutoModel.from_pretrained(TINY, dtype="float64").dtype == np.float64
    assert npformer.from_pretrained(TINY, dtype=np.dtype(np.float32)).dtype == np.float32
    OUTCOMES["taken"] += 4


# ---------------------------------------------------------------------------------------------
# writing: save_pretrained in each format, export_checkpoint, convert_checkpoint


def hostile_outputs(tmp: Path) -> dict:
    a_file = tmp / "taken.txt"
    a_file.write_text("mine\n")
    (tmp / "dir").mkdir(exist_ok=True)
    return {
        "None": (None, ConfigError), "empty string": ("", ConfigError), "int": (7, ConfigError),
        "bytes": (b"out", ConfigError), "NUL byte": ("o\x00ut", ConfigError),
        "existing file": (a_file, NpformerError), "parent is a file": (a_file / "out", NpformerError),
        "file-like name": (tmp / "out.safetensors", ConfigError),
    }


@pytest.mark.parametrize("case", ["None", "empty string", "int", "bytes", "NUL byte", "existing file",
                                  "parent is a file", "file-like name"])
@pytest.mark.parametrize("fmt", ["transformers", "timm", "export_checkpoint"])
def test_directory_writers_refuse_hostile_directories(tmp_path, model, timm_dir, fmt, case):
    value, expected = hostile_outputs(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    if fmt == "export_checkpoint":
        from npformer.checkpoints.export import export_checkpoint

        outcome(lambda: export_checkpoint(TINY, value, "transformers"), expected)
    elif fmt == "timm":
        timm_model = npformer.from_pretrained(timm_dir)
        outcome(lambda: timm_model.save_pretrained(value, format="timm"), expected)
    else:
        outcome(lambda: model.save_pretrained(value, format=fmt), expected)
    assert sorted(tmp_path.rglob("*")) == before
    assert (tmp_path / "taken.txt").read_text() == "mine\n"


@pytest.mark.parametrize("case,needles", [
    ("None", ["path=None"]), ("empty string", ["''"]), ("int", ["path=7"]), ("bytes", ["got bytes"]),
    ("NUL byte", ["NUL byte"]), ("existing directory", ["is an existing directory", "model.safetensors"]),
    ("trailing slash", ["ends in a path separator"]), ("missing parent", ["does not exist"]),
    ("parent is a file", ["is not a directory"]), ("another suffix", ["must end in .safetensors"]),
    ("no suffix", ["must end in .safetensors"]),
])
@pytest.mark.parametrize("writer", ["save_pretrained", "convert_checkpoint"])
def test_npformer_file_writers_refuse_what_is_no_file_path(tmp_path, model, writer, case, needles):
    (tmp_path / "taken.txt").write_text("mine\n")
    value = {"None": None, "empty string": "", "int": 7, "bytes": b"out", "NUL byte": "o\x00ut.safetensors",
             "existing directory": tmp_path, "trailing slash": f"{tmp_path / 'x.safetensors'}/",
             "missing parent": tmp_path / "no" / "m.safetensors", "parent is a file": tmp_path / "taken.txt" / "m.safetensors",
             "another suffix": tmp_path / "m.pth", "no suffix": tmp_path / "m"}[case]
    before = sorted(tmp_path.rglob("*"))
    call = (lambda: model.save_pretrained(value)) if writer == "save_pretrained" else (
        lambda: npformer.convert_checkpoint(TINY, value))
    outcome(call, NpformerError, needles)
    assert sorted(tmp_path.rglob("*")) == before


def test_save_pretrained_round_trips_where_it_writes(tmp_path, model):
    """Control: a file path is written and reads back to the same weights; an existing file is replaced."""
    path = tmp_path / "m.safetensors"
    path.write_text("old")
    model.save_pretrained(path)
    again = npformer.from_pretrained(path)
    assert all(np.array_equal(again.weights[k], model.weights[k]) for k in model.weights)
    model.save_pretrained(tmp_path / "tf" , format="transformers")
    assert {p.name for p in (tmp_path / "tf").iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    OUTCOMES["taken"] += 2


def test_save_pretrained_format_must_be_a_known_name(tmp_path, model):
    for fmt in (None, 3, "onnx", "Transformers"):
        outcome(lambda: model.save_pretrained(tmp_path / "x", format=fmt), ConfigError, ["format"])


# ---------------------------------------------------------------------------------------------
# config.json and preprocessor_config.json: JSON hazards


CONFIG_HAZARDS = {
    "nested 100 levels": ("[" * 100 + "]" * 100, ConfigError, ["100 levels deep"]),
    "nested 200,000 levels": ("{\"a\":" * 200_000 + "1" + "}" * 200_000, ConfigError, ["200,000 levels deep"]),
    "a list at the top": ("[1, 2]", ConfigError, ["not a JSON object", "list"]),
    "a string at the top": ('"config"', ConfigError, ["not a JSON object", "str"]),
    "not UTF-8": (b'{"model_type": "efficientformer", "x": "\xff"}', ConfigError, ["not UTF-8"]),
    "UTF-16": ('{"model_type": "efficientformer"}'.encode("utf-16"), ConfigError, ["not UTF-8"]),
    "a byte order mark": ('\ufeff{"model_type": "efficientformer"}'.encode(), ConfigError, ["byte order mark"]),
    "a key twice": ('{"model_type": "efficientformer", "num_labels": 3, "num_labels": 4}', ConfigError,
                    ["'num_labels' appears twice"]),
    "5000-digit integer": ('{"model_type": "efficientformer", "num_labels": ' + "9" * 5000 + "}", ConfigError,
                           ["5,000 digits"]),
    "truncated": ('{"model_type": "efficient', ConfigError, ["not valid JSON"]),
    "empty file": ("", ConfigError, ["not valid JSON"]),
}


def _with_config(tmp_path, text, **changes) -> Path:
    directory = tmp_path / "m"
    shutil.copytree(TINY, directory)
    if changes:
        text = json.dumps(json.loads((TINY / "config.json").read_text()) | changes).replace('"__NAN__"', "NaN")
    (directory / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return directory


@pytest.mark.parametrize("hazard", CONFIG_HAZARDS)
@pytest.mark.parametrize("loader", ["npformer.from_pretrained", "AutoConfig", "Config.from_pretrained",
                                    "AutoModelForImageClassification"])
def test_config_json_hazards_are_config_errors_naming_the_file(tmp_path, loader, hazard):
    text, expected, needles = CONFIG_HAZARDS[hazard]
    directory = _with_config(tmp_path, text)
    outcome(lambda: LOADERS[loader](directory), expected, [directory / "config.json", *needles])


@pytest.mark.parametrize("field,value,needles", [
    ("layer_norm_eps", "__NAN__", ["layer_norm_eps=nan"]),
    ("batch_norm_eps", 1e400, ["batch_norm_eps=inf"]),
    ("num_labels", 2**40, ["beyond any model's sizes"]),  # with no id2label, which would decide num_labels
    ("hidden_sizes", [8, 16, 24, 2**40], ["hidden_sizes="]),
    ("depths", [1, 1, 1, -1], ["depths="]),
])
def test_numbers_no_model_has_are_named_by_field(tmp_path, field, value, needles):
    directory = _with_config(tmp_path, "", **{field: value}, **({"id2label": None} if field == "num_labels" else {}))
    outcome(lambda: npformer.from_pretrained(directory), ConfigError, needles)


@pytest.mark.parametrize("hazard", ["nested 200,000 levels", "a list at the top", "not UTF-8", "a key twice"])
@pytest.mark.parametrize("loader", ["AutoImageProcessor", "EfficientFormerImageProcessor"])
def test_preprocessor_config_hazards(tmp_path, loader, hazard):
    text = CONFIG_HAZARDS[hazard][0]
    if hazard == "a key twice":
        text = '{"do_resize": true, "do_resize": false}'
    directory = tmp_path / "m"
    shutil.copytree(TINY, directory)
    (directory / "preprocessor_config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    load = {"AutoImageProcessor": npformer.AutoImageProcessor.from_pretrained,
            "EfficientFormerImageProcessor": npformer.EfficientFormerImageProcessor.from_pretrained}[loader]
    outcome(lambda: load(directory), ConfigError, ["preprocessor_config.json"])


@pytest.mark.parametrize("text,needles", [
    ("[" * 5000 + "]" * 5000, ["5,000 levels deep"]),
    ('{"a": 1, "a": 2}', ["'a' appears twice"]),
    ("[]", ["not a JSON object"]),
])
def test_a_weight_files_metadata_config_is_read_as_strictly(tmp_path, model, text, needles):
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    model.save_pretrained(path)
    from npformer.checkpoints.weights import read_safetensors

    tensors, metadata = read_safetensors(path)
    save_file(tensors, str(path), metadata=metadata | {"config": text})
    outcome(lambda: npformer.from_pretrained(path), WeightFileError, [path, *needles])


def test_a_timm_hub_config_is_read_as_strictly(tmp_path, monkeypatch, timm_dir):
    pytest.importorskip("huggingface_hub")
    from hub_cache import add_repo, offline_hub

    cache = offline_hub(monkeypatch, tmp_path)
    for repo, config in [("timm/deep", "[" * 100_000 + "]" * 100_000), ("timm/twice", '{"architecture": "a", "architecture": "b"}'),
                         ("timm/nameless", '{"architecture": 3}'), ("timm/sizes", json.dumps(
                             {"architecture": "efficientformerv2_s0", "pretrained_cfg": {"input_size": "224"}})),
                         ("timm/args", json.dumps({"architecture": "efficientformerv2_s0", "model_args": [1]}))]:
        add_repo(cache, repo, {"config.json": config.encode(), "model.safetensors": timm_dir / "model.safetensors"})
        outcome(lambda: npformer.create_model(f"hf-hub:{repo}", pretrained=True), ConfigError, ["config.json"])


# ---------------------------------------------------------------------------------------------
# image processors and timm transforms: numbers no pipeline has


@pytest.mark.parametrize("crop_pct", [float("nan"), float("inf"), -0.9, "0.9", True, [0.9], 0.0])
@pytest.mark.parametrize("make", ["TorchvisionEvalTransform.timm", "create_transform"])
def test_crop_pcts_no_pipeline_has(make, crop_pct):
    from npformer.preprocess import TorchvisionEvalTransform
    from npformer.timm.data import create_transform

    if make == "create_transform" and crop_pct == 0.0:
        pytest.skip("create_transform takes crop_pct 0 (and None) as timm's default, as timm does")
    call = (lambda: TorchvisionEvalTransform.timm(crop_pct=crop_pct)) if make != "create_transform" else (
        lambda: create_transform(224, crop_pct=crop_pct))
    outcome(call, ConfigError, ["crop_pct="])


def test_a_tiny_crop_pct_is_refused_when_its_resize_would_be_a_bomb():
    from npformer.errors import ImageError
    from npformer.preprocess import TorchvisionEvalTransform

    transform = TorchvisionEvalTransform.timm(crop_pct=1e-300)  # resize to 2.24e302 pixels a side
    outcome(lambda: transform(DIGIT), ImageError)


@pytest.mark.parametrize("kwargs", [{"input_size": "224"}, {"input_size": (3, "a", 224)}, {"input_size": -5},
                                    {"input_size": (3, 0, 0)}, {"interpolation": ["bicubic"]},
                                    {"interpolation": None}, {"mean": (0.5, float("nan"), 0.5)},
                                    {"std": (1.0, 0.0, 1.0)}])
def test_create_transform_refuses_what_it_cannot_run(kwargs):
    from npformer.timm.data import create_transform

    outcome(lambda: create_transform(**{"input_size": 224, "interpolation": "bicubic", **kwargs}), ConfigError)


@pytest.mark.parametrize("kwargs", [{"rescale_factor": float("nan")}, {"image_mean": [0.5, float("inf"), 0.5]},
                                    {"size": {"shortest_edge": float("nan")}}, {"size": -3},
                                    {"crop_size": "224"}, {"do_resize": "yes"}, {"resample": 99}])
@pytest.mark.parametrize("cls", ["EfficientFormerImageProcessor", "ViTImageProcessor"])
def test_image_processors_refuse_numbers_no_pipeline_has(cls, kwargs):
    if cls == "ViTImageProcessor" and "crop_size" in kwargs:
        pytest.skip("ViT has no crop")
    processor = getattr(npformer, cls)
    outcome(lambda: processor(**kwargs), ConfigError)


def test_strict_must_be_a_flag():
    outcome(lambda: npformer.AutoImageProcessor.from_pretrained(TINY, strict="no"), ConfigError, ["strict='no'"])
    outcome(lambda: npformer.AutoModelForImageClassification.from_pretrained(TINY, fuse="no"), ConfigError, ["fuse='no'"])


# ---------------------------------------------------------------------------------------------
# the command line: the same checks, one line each, no traceback


@pytest.mark.parametrize("argv,code,needle", [
    (["predict", "{digit}", "--weights", ""], 3, "--weights=''"),
    (["predict", "{digit}", "--weights", "{file}/"], 3, "ends in '/'"),
    (["predict", "{digit}", "--weights", "{dangling}"], 4, "symbolic link to nothing"),
    (["predict", "{digit}", "--weights", "{empty}"], 4, "without config.json"),
    (["shapes", "--weights", ""], 3, "--weights=''"),
    (["convert", "", "{out}"], 3, "SRC=''"),
    (["convert", "{tiny}", ""], 3, "DST=''"),
    (["convert", "{tiny}", "{empty}"], 2, "must end in .safetensors"),
    (["convert", "{tiny}", "{tmp}/no/such/m.safetensors"], 1, "no such directory"),
    (["convert", "{deep}", "{out}"], 3, "levels deep"),
])
def test_cli_path_arguments(tmp_path, capsys, argv, code, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    deep = _with_config(tmp_path, "[" * 100_000 + "]" * 100_000)
    files = {"digit": DIGIT, "file": tmp_path / "notes.txt", "dangling": tmp_path / "dangling", "empty": tmp_path / "empty",
             "out": tmp_path / "out.safetensors", "tiny": TINY, "tmp": tmp_path, "deep": deep}
    try:
        got = cli.main([a.format(**files) for a in argv])
    except Exception as err:  # noqa: BLE001
        OUTCOMES["raw crash"] += 1
        pytest.fail(f"raw crash: {type(err).__name__}: {err}")
    out, err = capsys.readouterr()
    if got == 0:
        OUTCOMES["silent answer"] += 1
    else:
        OUTCOMES["refused"] += 1
    assert got == code, (got, err)
    assert err.startswith("npformer: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "out.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# properties (hypothesis): the shared checks never crash on any value


ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=20), st.text(max_size=20),
                     st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@FUZZ
@given(value=ANYTHING)
def test_any_value_is_a_path_or_a_config_error(value):
    from npformer.arguments import model_dtype, path_text, source_path

    for check in (lambda: source_path(value, "path"), lambda: path_text(value, "path"), lambda: model_dtype(value)):
        try:
            result = check()
        except NpformerError as err:
            assert str(err)
            continue
        if isinstance(result, (Path, str)):
            assert isinstance(value, str) and value and "\x00" not in value
        else:
            assert result in (np.float32, np.float64)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200),
                      st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                                   lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                                   max_leaves=30).map(json.dumps)))
def test_any_text_is_a_json_object_or_a_config_error(text):
    from npformer.jsonfile import parse_json_object

    try:
        value = parse_json_object(text, "x.json")
    except ConfigError as err:
        assert str(err).startswith("x.json")
        return
    assert isinstance(value, dict)
    assert value == json.loads(text)  # taken: exactly what Python's reader reads


def test_the_corpus_counts():
    """Runs last in this file: the corpus so far holds no raw crash and no silent answer."""
    assert OUTCOMES["raw crash"] == 0 and OUTCOMES["silent answer"] == 0, OUTCOMES
