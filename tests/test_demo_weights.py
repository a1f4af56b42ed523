"""The demo weights in weights/: trained by weights/train_demo.py on scikit-learn's handwritten
digits with the PyTorch references. npformer must reproduce the references' logits on the
held-out split (stored in tests/fixtures/digits/heldout.npz by the training script, and
EfficientFormerV2's, at 128 px, in heldout_v2.npz) and their accuracy, and `npformer predict IMAGE`
must use the EfficientFormer by default."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import npformer
from npformer import cli
from npformer.preprocess import EfficientFormerImageProcessor
from npformer.checkpoints.weights import load_weights
from tiers import heavy

ROOT = Path(__file__).parent.parent
DIGITS = Path(__file__).parent / "fixtures" / "digits"
HELDOUT = np.load(DIGITS / "heldout.npz")
HELDOUT_V2 = np.load(DIGITS / "heldout_v2.npz")  # the same held-out images; EfficientFormerV2's logits
WEIGHTS = {
    "efficientformer": ROOT / "weights" / "efficientformer-digits.safetensors",
    "swiftformer": ROOT / "weights" / "swiftformer-digits.safetensors",
    "efficientformerv2": ROOT / "weights" / "efficientformerv2-digits.safetensors",
}
REFERENCE_LOGITS = {
    "efficientformer": HELDOUT["efficientformer_logits"],
    "swiftformer": HELDOUT["swiftformer_logits"],
    "efficientformerv2": HELDOUT_V2["efficientformerv2_logits"],
}
PREPROCESSOR_CONFIGS = {"efficientformer": "preprocessor_config.json", "swiftformer": "preprocessor_config.json",
                        "efficientformerv2": "preprocessor_config_v2.json"}


def heldout_pixels(metadata) -> np.ndarray:
    """The held-out images through the weight file's own preprocessing: [360, 3, S, S]."""
    processor = EfficientFormerImageProcessor.from_dict(json.loads(metadata["preprocessor"]))
    return processor([Image.fromarray(image, mode="L") for image in HELDOUT["images"]])["pixel_values"]


@pytest.mark.parametrize("family", ["efficientformer", pytest.param("swiftformer", marks=heavy),
                                    pytest.param("efficientformerv2", marks=heavy)])
def test_npformer_reproduces_the_trained_models(family):
    _, metadata = load_weights(WEIGHTS[family])
    model = npformer.from_pretrained(WEIGHTS[family])
    logits = np.concatenate([model(batch).logits for batch in np.array_split(heldout_pixels(metadata), 6)])
    reference = REFERENCE_LOGITS[family]
    assert reference.shape == (360, 10) and reference.dtype == np.float32
    assert np.abs(logits - reference).max() <= 1e-4
    ours = float((logits.argmax(1) == HELDOUT["labels"]).mean())
    theirs = float((reference.argmax(1) == HELDOUT["labels"]).mean())
    assert ours == theirs and f"{theirs:.4f}" == metadata["heldout_accuracy_pytorch"]
    assert theirs >= 0.95


def test_weight_files_say_where_they_came_from():
    for family, path in WEIGHTS.items():
        _, metadata = load_weights(path)
        assert metadata["family"] == family
        assert "load_digits" in metadata["dataset"] and "360 held-out" in metadata["split"]
        assert path.stat().st_size < 2_000_000
        preprocessor = json.loads((DIGITS / PREPROCESSOR_CONFIGS[family]).read_text())
        assert json.loads(metadata["preprocessor"]) == preprocessor
    assert load_weights(WEIGHTS["swiftformer"])[1]["attention_generation"] == "v2"
    # EfficientFormerV2 at 128 px (112 would give an odd 7×7 stage-2 grid), trained with timm's code
    _, metadata = load_weights(WEIGHTS["efficientformerv2"])
    config = json.loads(metadata["config"])
    assert metadata["source"] == "timm" and metadata["architecture"] == "EfficientFormerV2ForImageClassificationWithTeacher"
    assert config["image_size"] == 128 and json.loads(metadata["preprocessor"])["size"] == {"height": 128, "width": 128}
    assert config["id2label"] == {str(i): str(i) for i in range(10)}
    assert metadata["training"].startswith("timm EfficientFormerV2") and "128x128 input" in metadata["training"]


@pytest.mark.parametrize("image", sorted(DIGITS.glob("digit_*.png")), ids=lambda p: p.name)
def test_predict_uses_the_demo_weights_and_gets_the_digit_right(image, capsys):
    assert cli.DEFAULT_WEIGHTS == WEIGHTS["efficientformer"]
    assert cli.main(["predict", str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "EfficientFormerForImageClassificationWithTeacher" in lines[0] and "the weight file's own" in lines[0]
    rank, index, label = lines[1].split()[:3]
    assert (rank, index, label) == ("1.", image.name.split("_")[1], image.name.split("_")[1])
    assert len(lines) == 6  # header and top-5
