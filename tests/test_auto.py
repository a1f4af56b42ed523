"""transformers' names at npformer's top level (npformer/auto.py): the Auto classes, both image
processors, every model class, each `from_pretrained` taking a directory, a file or a hub id.

Torch-free: dispatch as transformers 4.40.2 decides it — config.json's `model_type` and
`architectures` (EfficientFormer's two classifiers), an npformer file's metadata, a timm or
original checkpoint's heads — on the checkpoints transformers and timm wrote (tests/fixtures),
the demo weights, and configs edited the ways transformers reads them; `from_config`; options
without meaning in NumPy refused by name.
Live (oracle): npformer's choices are transformers' own auto mappings, class for class; and the
transformers documentation's examples — the EfficientFormer backbone, both EfficientFormer
classifiers (the teacher too), the SwiftFormer backbone and classifier (the docstrings of
transformers 4.40.2, read from the installed package) and `AutoModelForImageClassification`
(transformers' own doc template) — run in a fresh offline process on a Hugging Face cache
holding transformers-written checkpoints under the published ids, once as written and once with
only `from transformers import` → `from npformer import` and `return_tensors="pt"` → `"np"`
changed: the same printed output and tensors within 1e-4.
"""

import doctest
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer.errors import ConfigError
from npformer.preprocess import EfficientFormerImageProcessor, ViTImageProcessor, recipe
from npformer.tools.parity import seeded_pixels

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "checkpoints"
SWIFT = FIXTURES / "checkpoints_swiftformer"
WEIGHTS = Path(__file__).parent.parent / "weights"


def with_architectures(tmp_path, source: Path, architectures) -> Path:
    """A copy of a transformers directory whose config.json names other `architectures` (None: none)."""
    target = tmp_path / f"arch-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.pop("architectures")
    if architectures is not None:
        config["architectures"] = architectures
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_the_names_transformers_users_import_are_at_the_top_level():
    for name in ("AutoConfig", "AutoImageProcessor", "AutoModel", "AutoModelForImageClassification",
                 "EfficientFormerImageProcessor", "ViTImageProcessor", *npformer.architectures()):
        assert name in npformer.__all__ and hasattr(getattr(npformer, name), "from_pretrained"), name
    assert "create_model" in npformer.__all__ and npformer.create_model is npformer.timm.create_model
    assert npformer.EfficientFormerImageProcessor is EfficientFormerImageProcessor
    assert npformer.ViTImageProcessor is ViTImageProcessor


def test_auto_model_classes_dispatch_as_transformers(tmp_path):
    teacher = TINY / "hf_safetensors"  # architectures: [...WithTeacher]
    assert type(npformer.AutoModelForImageClassification.from_pretrained(teacher)).__name__ == \
        "EfficientFormerForImageClassificationWithTeacher"
    assert type(npformer.AutoModel.from_pretrained(teacher)).__name__ == "EfficientFormerModel"
    # config.json's architectures pick among EfficientFormer's two classifiers; without it, the first
    single = with_architectures(tmp_path, teacher, ["EfficientFormerForImageClassification"])
    assert type(npformer.AutoModelForImageClassification.from_pretrained(single)).__name__ == \
        "EfficientFormerForImageClassification"
    unnamed = with_architectures(tmp_path, teacher, None)
    assert type(npformer.AutoModelForImageClassification.from_pretrained(unnamed)).__name__ == \
        "EfficientFormerForImageClassification"
    assert type(npformer.AutoModelForImageClassification.from_pretrained(SWIFT / "hf_bin")).__name__ == \
        "SwiftFormerForImageClassification"
    assert type(npformer.AutoModel.from_pretrained(SWIFT / "hf_bin")).__name__ == "SwiftFormerModel"
    # files: an original / timm checkpoint's heads, an npformer file's metadata
    assert type(npformer.AutoModelForImageClassification.from_pretrained(TINY / "original.pth")).__name__ == \
        "EfficientFormerForImageClassificationWithTeacher"
    swift_timm = npformer.AutoModelForImageClassification.from_pretrained(SWIFT / "timm.pth")
    assert swift_timm.config.attention_generation == "v2"
    for path, name in ((WEIGHTS / "efficientformer-digits.safetensors", "EfficientFormerForImageClassificationWithTeacher"),
                       (WEIGHTS / "efficientformerv2-digits.safetensors", None)):
        if path.is_file():
            model = npformer.AutoModelForImageClassification.from_pretrained(path)
            assert name is None or type(model).__name__ == name
            assert type(npformer.AutoModel.from_pretrained(path)).__name__.endswith("Model")


def test_auto_models_give_the_classes_logits(tmp_path):
    pixels = seeded_pixels(1)
    teacher = npformer.AutoModelForImageClassification.from_pretrained(TINY / "hf_safetensors")
    direct = npformer.EfficientFormerForImageClassificationWithTeacher.from_pretrained(TINY / "hf_safetensors")
    np.testing.assert_array_equal(teacher(pixels).logits, direct(pixels).logits)
    single = npformer.AutoModelForImageClassification.from_pretrained(
        with_architectures(tmp_path, TINY / "hf_safetensors", ["EfficientFormerForImageClassification"]))
    np.testing.assert_array_equal(single(pixels).logits, direct(pixels).cls_logits)
    fused = npformer.AutoModelForImageClassification.from_pretrained(TINY / "hf_safetensors", fuse=True,
                                                                    dtype=np.float64)
    assert fused.fused and fused.dtype == np.float64
    np.testing.assert_allclose(fused(pixels).logits, direct(pixels).logits, atol=1e-5, rtol=0)


def test_auto_config(tmp_path):
    from_dir = npformer.AutoConfig.from_pretrained(TINY / "hf_safetensors")
    assert type(from_dir).__name__ == "EfficientFormerConfig" and from_dir.hidden_sizes == [8, 16, 24, 32]
    assert npformer.AutoConfig.from_pretrained(TINY / "hf_safetensors" / "config.json") == from_dir
    assert npformer.EfficientFormerConfig.from_pretrained(TINY / "hf_safetensors") == from_dir
    swift = npformer.AutoConfig.from_pretrained(SWIFT / "hf_bin")
    assert type(swift).__name__ == "SwiftFormerConfig" and swift.attention_generation == "v1"
    assert npformer.SwiftFormerConfig.from_pretrained(SWIFT / "hf_bin" / "config.json") == swift
    with pytest.raises(ConfigError, match="model_type is 'swiftformer', expected 'efficientformer'"):
        npformer.EfficientFormerConfig.from_pretrained(SWIFT / "hf_bin")
    assert npformer.AutoConfig.from_pretrained(SWIFT / "timm.pth").attention_generation == "v2"
    with pytest.raises(ConfigError, match="attention generation v1"):
        npformer.AutoConfig.from_pretrained(SWIFT / "hf_bin", attention_generation="v2")
    demo = WEIGHTS / "swiftformer-digits.safetensors"
    if demo.is_file():
        assert npformer.AutoConfig.from_pretrained(demo) == npformer.from_pretrained(demo).config
    # a timm hub directory: the model its config.json names, as timm builds it
    model = npformer.create_model("efficientformerv2_s0")
    model.model.save_pretrained(tmp_path / "timm", format="timm")
    assert npformer.AutoConfig.from_pretrained(tmp_path / "timm") == model.config


def test_auto_image_processor(tmp_path):
    published = EfficientFormerImageProcessor.published()
    directory = tmp_path / "l1"
    shutil.copytree(TINY / "hf_safetensors", directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(published.to_dict()))
    assert npformer.AutoImageProcessor.from_pretrained(directory) == published
    assert npformer.AutoImageProcessor.from_pretrained(directory / "preprocessor_config.json") == published
    # no image_processor_type: the config's model type decides (SwiftFormer -> ViTImageProcessor), as transformers
    swift = tmp_path / "xs"
    shutil.copytree(SWIFT / "hf_bin", swift)
    (swift / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "do_resize": True, "size": 224,
                                                                "image_mean": [0.485, 0.456, 0.406],
                                                                "image_std": [0.229, 0.224, 0.225]}))
    assert npformer.AutoImageProcessor.from_pretrained(swift) == ViTImageProcessor.published_swiftformer()
    # an older config naming a feature extractor, read as transformers reads it
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {**{k: v for k, v in published.to_dict().items() if k != "image_processor_type"},
         "feature_extractor_type": "EfficientFormerFeatureExtractor"}))
    assert npformer.AutoImageProcessor.from_pretrained(directory) == published
    # weight files: the preprocessing they record, else their source's recipe
    demo = WEIGHTS / "efficientformer-digits.safetensors"
    if demo.is_file():
        assert npformer.AutoImageProcessor.from_pretrained(demo) == npformer.preprocess.make_processor(
            None, demo, npformer.models.registry.FAMILIES["efficientformer"], npformer.load(demo)[1])[0]
    assert npformer.AutoImageProcessor.from_pretrained(TINY / "timm.pth") == recipe("timm")
    assert npformer.AutoImageProcessor.from_pretrained(TINY / "original.pth") == recipe("original")
    model = npformer.create_model("swiftformer_xs")
    model.model.save_pretrained(tmp_path / "timm", format="timm")
    assert npformer.AutoImageProcessor.from_pretrained(tmp_path / "timm") == recipe("timm")
    with pytest.raises(ConfigError, match="no such file"):
        npformer.AutoImageProcessor.from_pretrained(TINY / "hf_safetensors")
    (directory / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ConvNextImageProcessor"}))
    with pytest.raises(ConfigError, match="'ConvNextImageProcessor' is not one npformer has"):
        npformer.AutoImageProcessor.from_pretrained(directory)


def test_from_config_and_refused_options():
    config = npformer.AutoConfig.from_pretrained(TINY / "hf_safetensors")
    assert type(npformer.AutoModel.from_config(config)).__name__ == "EfficientFormerModel"
    assert type(npformer.AutoModelForImageClassification.from_config(config)).__name__ == \
        "EfficientFormerForImageClassificationWithTeacher"
    for options, match in [({"torch_dtype": "float16"}, "torch_dtype: pass dtype=np.float32"),
                           ({"device_map": "auto"}, "device_map: npformer runs on the CPU"),
                           ({"trust_remote_code": True}, "never runs code"),
                           ({"num_labels": 3}, "never with freshly initialised layers"),
                           ({"nonsense": 1}, "does not take nonsense")]:
        with pytest.raises(ConfigError, match=match):
            npformer.AutoModelForImageClassification.from_pretrained(TINY / "hf_safetensors", **options)
    with pytest.raises(ConfigError, match="does not take torch_dtype"):
        npformer.AutoImageProcessor.from_pretrained(TINY / "hf_safetensors", torch_dtype="float16")
    with pytest.raises(ConfigError, match="does not take revisions"):
        npformer.AutoConfig.from_pretrained(TINY / "hf_safetensors", revisions="main")


# ---------------------------------------------------------------------------------------------
# live: transformers' own mappings and documentation


@pytest.mark.oracle
def test_dispatch_is_transformers_auto_mapping(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.auto import image_processing_auto, modeling_auto

    for fam in npformer.models.registry.FAMILIES.values():
        if "transformers" not in fam.schema.KEY_MAPS:
            continue
        assert modeling_auto.MODEL_MAPPING_NAMES[fam.name] == npformer.AutoModel.choose(fam, [])
        classifiers = modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[fam.name]
        classifiers = (classifiers,) if isinstance(classifiers, str) else classifiers
        assert classifiers[0] == npformer.AutoModelForImageClassification.choose(fam, [])
        for name in classifiers:
            assert npformer.AutoModelForImageClassification.choose(fam, [name]) == name
        assert image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES[fam.name] == fam.processor
    # the same directories as above: transformers picks the same classes
    for architectures in (["EfficientFormerForImageClassification"], ["EfficientFormerForImageClassificationWithTeacher"],
                          ["SomethingElse"]):
        directory = with_architectures(tmp_path, TINY / "hf_safetensors", architectures)
        ours = npformer.AutoModelForImageClassification.from_pretrained(directory)
        theirs = transformers.AutoModelForImageClassification.from_pretrained(directory)
        assert type(ours).__name__ == type(theirs).__name__
    # without `architectures` transformers 4.40.2 means to take the first class too (auto_factory's
    # `_get_model_class`), but iterates over config.architectures = None and crashes: npformer takes the first
    unnamed = with_architectures(tmp_path, TINY / "hf_safetensors", None)
    with pytest.raises(TypeError, match="'NoneType' object is not iterable"):
        transformers.AutoModelForImageClassification.from_pretrained(unnamed)
    first = modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES["efficientformer"][0]
    assert type(npformer.AutoModelForImageClassification.from_pretrained(unnamed)).__name__ == first


# the published preprocessor configs (snap-research: EfficientFormerImageProcessor; MBZUAI: no type)
SNAP_PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
                     "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                     "image_processor_type": "EfficientFormerImageProcessor", "image_std": [0.229, 0.224, 0.225],
                     "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 256}}
MBZUAI_PREPROCESSOR = {"do_normalize": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                       "image_std": [0.229, 0.224, 0.225], "size": 224}
# stands in for `datasets`: huggingface/cats-image's test image is COCO 000000039769, tests/fixtures/images/two_cats.png
DATASETS_STUB = '''
from PIL import Image
def load_dataset(name):
    assert name == "huggingface/cats-image", name
    return {"test": {"image": [Image.open(%r).convert("RGB")]}}
'''
RUNNER = """
import contextlib, doctest, io, json, sys
import numpy as np
results = {}
for key, source in json.loads(sys.argv[1]).items():
    scope, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for example in doctest.DocTestParser().get_examples(source):
            exec(compile(example.source, key, "single"), scope)  # as doctest runs it: expression values printed
    arrays = {}
    for name in ("last_hidden_states", "logits"):
        if name in scope:
            value = scope[name]
            arrays[name] = (value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else value).tolist()
    results[key] = {"printed": printed.getvalue(), "arrays": arrays}
print(json.dumps(results))
"""


def documentation_examples() -> dict:
    """{name: (docstring example as transformers 4.40.2 ships it, its repo)}."""
    import transformers
    from transformers.utils import doc

    examples = {name: getattr(transformers, name).forward.__doc__ for name in (
        "EfficientFormerModel", "EfficientFormerForImageClassification", "EfficientFormerForImageClassificationWithTeacher",
        "SwiftFormerModel", "SwiftFormerForImageClassification")}
    for repo in ("snap-research/efficientformer-l1-300", "MBZUAI/swiftformer-xs"):
        examples[f"AutoModelForImageClassification/{repo}"] = doc.PT_VISION_SEQ_CLASS_SAMPLE.format(
            model_class="AutoModelForImageClassification", checkpoint=repo, expected_output="...")
    return {name: text[text.index("```python"):text.index("```", text.index("```python") + 9)] for name, text in examples.items()}


def swap_imports(example: str) -> str:
    """The two changes a transformers user makes: the import line, and "pt" -> "np"."""
    assert example.count("from transformers import") == 1 and example.count('return_tensors="pt"') == 1
    return example.replace("from transformers import", "from npformer import").replace('return_tensors="pt"',
                                                                                       'return_tensors="np"')


@pytest.fixture(scope="module")
def documentation_runs(tmp_path_factory):
    """Both versions of every documentation example, run in one fresh offline process whose HF
    cache holds transformers-written checkpoints (npformer's seeded weights, ImageNet labels) under
    the published ids."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("huggingface_hub")
    from npformer.labels import imagenet_labels
    from npformer.tools.oracle import hf_model

    from hub_cache import BLOCK_NETWORK, add_directory, offline_env, scanned

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("docs")
    labels = dict(enumerate(imagenet_labels()))
    for repo, config, preprocessor in (
            ("snap-research/efficientformer-l1-300", npformer.EfficientFormerConfig.variant("l1", id2label=labels),
             SNAP_PREPROCESSOR),
            ("MBZUAI/swiftformer-xs", npformer.SwiftFormerConfig.variant("xs", id2label=labels), MBZUAI_PREPROCESSOR)):
        directory = root / repo.replace("/", "--")
        hf_model(config, npformer.checkpoints.seeded.seeded_weights(config, 2), 2).save_pretrained(directory)
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
        add_directory(root / "hf" / "hub", repo, directory)
    assert len(scanned(root / "hf" / "hub")) == 2
    (root / "stub").mkdir()
    (root / "stub" / "datasets.py").write_text(DATASETS_STUB % str(FIXTURES / "images" / "two_cats.png"))
    examples = documentation_examples()
    sources = {f"{name}/transformers": text for name, text in examples.items()}
    sources |= {f"{name}/npformer": swap_imports(text) for name, text in examples.items()}
    env = {**offline_env(root / "hf"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root / "stub"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", BLOCK_NETWORK + RUNNER, json.dumps(sources)], capture_output=True,
                         text=True, env=env, timeout=900, cwd=root)
    assert run.returncode == 0, run.stderr[-4000:]
    return examples, json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["EfficientFormerModel", "EfficientFormerForImageClassification",
                                  "EfficientFormerForImageClassificationWithTeacher", "SwiftFormerModel",
                                  "SwiftFormerForImageClassification",
                                  "AutoModelForImageClassification/snap-research/efficientformer-l1-300",
                                  "AutoModelForImageClassification/MBZUAI/swiftformer-xs"])
def test_transformers_documentation_runs_with_the_import_changed(documentation_runs, name):
    examples, results = documentation_runs
    theirs, ours = results[f"{name}/transformers"], results[f"{name}/npformer"]
    assert ours["printed"] == theirs["printed"] and ours["printed"].strip()
    assert ours["arrays"].keys() == theirs["arrays"].keys() and ours["arrays"]
    for key in theirs["arrays"]:
        a, b = np.array(ours["arrays"][key]), np.array(theirs["arrays"][key])
        assert a.shape == b.shape and np.abs(a - b).max() / max(1.0, np.abs(b).max()) <= 1e-4, key
    wanted = [e.want for e in doctest.DocTestParser().get_examples(examples[name]) if e.want]
    if name.endswith("Model"):  # the documented output shape, e.g. [1, 49, 448]
        assert ours["printed"] == "".join(wanted)
    else:  # the documented label line, printed for these weights' top class
        from npformer.labels import imagenet_labels

        assert ours["printed"].strip() in imagenet_labels()
