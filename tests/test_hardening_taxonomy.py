"""One error taxonomy: every exception npformer raises on purpose is an NpformerError subclass,
each subclass has its own CLI exit code, and the few other exceptions in the source are listed
here with the reason they never reach a user.

The scan reads every module of the package (subpackages too) with `ast`: a new `raise ValueError(...)` (or any exception class
that is not an NpformerError) fails this test until it is either changed or listed below.
"""

import ast
import builtins
import importlib
import sys
import re
from pathlib import Path

import pytest

import npformer
from npformer import cli
from npformer.errors import (
    CheckpointMismatchError, ConfigError, ImageError, InputError, NpformerError, UnsafePickleError, WeightFileError,
)

PACKAGE = Path(npformer.__file__).resolve().parent

# (file, exception as written) -> why it never reaches a user as itself
NOT_NPFORMER_ERRORS = {
    ("checkpoints/torchfile.py", "ValueError"): "raised while unpickling; load_torch_file turns every non-npformer exception "
                                    "into WeightFileError (tests/test_fuzz_loaders.py checks it on mutated files)",
    ("cli/common.py", "argparse.ArgumentTypeError"): "argparse type converters; argparse reports them as usage errors (exit 2)",
    ("erf.py", "TypeError"): "internal: erf only sees the float32/float64 arrays as_pixel_values makes",
    ("layers.py", "ValueError"): "internal invariant of conv2d: check_tensors and as_pixel_values fix every channel count",
    ("labels.py", "RuntimeError"): "a packaging accident (a label file without 1000 names), not a user error",
    ("tools/oracle.py", "RuntimeError"): "oracle tooling (needs torch): a reference model refusing weights is a bug",
    ("tools/oracle.py", "TypeError"): "oracle tooling (needs torch): with_pairwise_bias given a model with no timm "
                                      "attention to patch is a bug in the test that calls it",
    ("tools/golden.py", "ValueError"): "one raised inside a try that turns it into WeightFileError, one internal guard",
    ("models/base.py", "NotImplementedError"): "abstract method",
    ("preprocess/processors.py", "NotImplementedError"): "abstract method",
    ("auto.py", "NotImplementedError"): "abstract method (_AutoModel.choose)",
    ("timm/factory.py", "AttributeError"): "TimmModel.__getattr__: the attribute protocol requires it",
    ("preprocess/fields.py", "AttributeError"): "BatchFeature.__getattr__: the attribute protocol requires it",
    ("macs.py", "KeyError"): "MacCount.__getitem__ (a part by name): the item protocol requires it",
    ("tools/plots.py", "ImportError"): "matplotlib (the notebooks extra) is missing: an ImportError is what callers expect",
    ("parallel.py", "job.error"): "parallel_for re-raises, on its caller, whatever a piece raised (on a helper thread): "
                                  "the piece's own error, npformer's or not",
    ("evaluation/run.py", "EvaluationInterrupted"): "a KeyboardInterrupt (Ctrl-C) carrying how far the run got; "
                                                    "npformer evaluate prints the resume command and exits 130",
}


def raised_names():
    """{(file relative to the package, name as written): count} for every `raise X(...)` / `raise X`
    in the package's modules, with the function a name is returned from when it is a helper that
    builds the exception."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                key = (path.relative_to(PACKAGE).as_posix(), ast.unparse(target))
                found[key] = found.get(key, 0) + 1
    return found


def module_path(module_file):
    """"checkpoints/torchfile.py" -> "npformer.checkpoints.torchfile"."""
    return "npformer." + module_file[:-3].replace("/", ".").removesuffix(".__init__")


def resolve(module_file, name):
    """The object `name` denotes in npformer's module `module_file`, else in npformer.errors (which
    functions import locally), else in builtins; None if none has it."""
    module = importlib.import_module(module_path(module_file))
    head, *rest = name.split(".")
    obj = next((getattr(m, head) for m in (module, npformer.errors, builtins) if hasattr(m, head)), None)
    for part in rest:
        obj = getattr(obj, part, None)
    return obj


def is_npformer_error(module_file, name):
    obj = resolve(module_file, name)
    if isinstance(obj, type):
        return issubclass(obj, NpformerError)
    if callable(obj):  # a helper that builds the exception: judged by its return annotation
        annotation = getattr(obj, "__annotations__", {}).get("return")
        module = importlib.import_module(module_path(module_file))
        cls = getattr(module, annotation, None) if isinstance(annotation, str) else annotation
        return isinstance(cls, type) and issubclass(cls, NpformerError)
    return False


def test_every_raise_is_an_npformer_error_or_explained():
    found = raised_names()
    assert len(found) > 20  # the scan sees the package
    unexplained = sorted(key for key in found if not is_npformer_error(*key) and key not in NOT_NPFORMER_ERRORS)
    assert unexplained == [], "raise an NpformerError subclass, or explain why in NOT_NPFORMER_ERRORS"
    stale = sorted(key for key in NOT_NPFORMER_ERRORS if key not in found or is_npformer_error(*key))
    assert stale == [], "NOT_NPFORMER_ERRORS lists raises that no longer exist"


def test_the_scan_would_catch_a_new_value_error(tmp_path, monkeypatch):
    """Control: the scan really flags a plain ValueError."""
    fake = tmp_path / "npformer"
    fake.mkdir()
    (fake / "errors.py").write_text("")
    (fake / "sneaky.py").write_text("def f(x):\n    if x:\n        raise ValueError('bad x')\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = raised_names()
    assert found == {("sneaky.py", "ValueError"): 1}
    assert not is_npformer_error("labels.py", "ValueError")  # resolves builtins the same way


def all_subclasses(cls):
    out = []
    for sub in cls.__subclasses__():
        out += [sub] + all_subclasses(sub)
    return out


def test_each_error_class_has_its_own_exit_code_and_the_help_lists_it():
    classes = [NpformerError] + [c for c in all_subclasses(NpformerError) if c.__module__.startswith("npformer")]
    codes = {}
    for cls in classes:
        codes.setdefault(cls.exit_code, []).append(cls.__name__)
    # 2 is argparse's own usage status: both command-line problems share it on purpose
    assert {code: sorted(names) for code, names in codes.items()} == {
        1: ["NpformerError"], 2: ["MissingExtraError", "UsageError"], 3: ["ConfigError"], 4: ["WeightFileError"],
        5: ["UnsafePickleError"], 6: ["CheckpointMismatchError"], 7: ["InputError"], 8: ["ImageError"],
    }
    for code in codes:
        assert re.search(rf"^  {code}  \S", cli.EXIT_CODES, re.M), code


def test_value_error_compatibility():
    """ConfigError and InputError were ValueErrors before the taxonomy; they still are."""
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, ValueError)
    assert issubclass(UnsafePickleError, WeightFileError)
    for cls in (WeightFileError, CheckpointMismatchError, ImageError):
        assert issubclass(cls, NpformerError) and not issubclass(cls, ValueError)


def test_public_api_misuse_is_a_config_error():
    from npformer.labels import imagenet_labels

    with pytest.raises(ConfigError, match="unknown label style 'fancy'"):
        imagenet_labels("fancy")


@pytest.mark.parametrize("argv,code,needle", [
    (["predict", "{missing}"], 8, "missing.png: no such file"),
    (["predict", "{digit}", "--weights", "{missing}"], 4, "missing.png: no such file"),
    (["predict", "{digit}", "--processor", "nope"], 3, "nope"),
    (["trace", "{bad_npy}", "{out}"], 7, "bad.npy: cannot read as a .npy array"),
    (["trace", "{empty_npy}", "{out}"], 7, "empty.npy: cannot read as a .npy array"),
    (["trace", "{nan_npy}", "{out}"], 7, "holds 1 NaN"),
    (["trace", "{int_npy}", "{out}"], 7, "int.npy: expected NCHW float pixel values"),
    (["compare", "{missing}", "{missing}"], 4, "missing.png"),
    (["shapes", "--variant", "l1", "--size", "100"], 7, "takes 193–224 px inputs; a 100×100 input gives 4×4"),
])
def test_cli_maps_each_failure_to_its_code_in_one_line(tmp_path, capsys, argv, code, needle):
    import numpy as np

    files = {"missing": tmp_path / "missing.png", "digit": Path(__file__).parent / "fixtures/digits/digit_3_705.png",
             "bad_npy": tmp_path / "bad.npy", "empty_npy": tmp_path / "empty.npy", "nan_npy": tmp_path / "nan.npy",
             "int_npy": tmp_path / "int.npy", "out": tmp_path / "out.safetensors"}
    files["bad_npy"].write_bytes(b"\x93NUMPY garbage")
    files["empty_npy"].write_bytes(b"")
    nan = np.zeros((1, 3, 112, 112), np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.save(files["nan_npy"], nan)
    np.save(files["int_npy"], np.zeros((1, 3, 112, 112), np.int64))
    assert cli.main([a.format(**files) for a in argv]) == code
    out, err = capsys.readouterr()
    assert err.startswith("npformer: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not files["out"].exists()
