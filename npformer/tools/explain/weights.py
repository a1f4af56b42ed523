"""Which weights a notebook runs on: `choose_model` (a checkpoint you point at, else the demo weights
in `weights/`, else seeded weights) says which; `pixels_to_image` turns pixel values back into a picture."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...models.seeded import seeded_weights
from ...errors import InputError
from ...loading import load
from ...models.classes import model_class
from ...models.registry import FAMILIES, variant_name
from ...preprocess import make_processor, recipe


REPO = Path(__file__).resolve().parents[3]
DEMO_WEIGHTS = {name: REPO / "weights" / f.demo_weights for name, f in FAMILIES.items()}
WEIGHTS_ENV = "NPFORMER_WEIGHTS"


@dataclass
class Chosen:
    """A model picked for a notebook, and what it runs on.

    `kind` is "checkpoint" (a file or directory the reader pointed at), "demo" (the digits
    weights in `weights/`) or "seeded" (random weights from `npformer.checkpoints.seeded`); `processor` turns
    an image path into the [1, 3, S, S] pixel values this model expects; `size` is S."""

    model: object
    kind: str
    path: Path | None
    processor: object
    preprocessing: str
    size: int
    notes: tuple = ()

    @property
    def description(self) -> str:
        name = type(self.model).__name__
        if self.kind == "seeded":
            what = f"seeded weights (random, npformer.checkpoints.seeded): {name} {self.variant.upper()}"
        elif self.kind == "demo":
            what = f"demo weights {self.path.relative_to(REPO)} (trained on scikit-learn digits): {name}"
        else:
            what = f"checkpoint {self.path}: {name}"
        lines = [f"{what}, input {self.size}×{self.size}, preprocessing: {self.preprocessing}", *self.notes]
        return "\n".join(lines)

    @property
    def variant(self) -> str:
        return variant_name(self.model.config) or "custom"


def _image_size(processor) -> int:
    """Side of the square pixel values a processor produces (probes a 1×1 grey image)."""
    from PIL import Image

    return int(processor(Image.new("RGB", (1, 1), (128, 128, 128)))["pixel_values"].shape[-1])


def choose_model(family: str, weights=None, seeded_variant: str | None = None, dtype=np.float32,
                 attention_generation: str | None = None, env=None) -> Chosen:
    """The model a notebook runs on, in this order of preference:

    1. `weights` if given, else the path in the environment variable NPFORMER_WEIGHTS when it
       holds a model of `family` (any checkpoint `npformer.from_pretrained` reads);
    2. the demo weights `weights/{family}-digits.safetensors` when they are there;
    3. seeded weights for `seeded_variant` (default: the family's registry `seeded_variant`:
       EfficientFormer L1, SwiftFormer XS, EfficientFormerV2 S0; for SwiftFormer the attention
       generation is `attention_generation` or "v2").

    `weights="seeded"` (or NPFORMER_WEIGHTS=seeded) skips straight to 3.

    The processor is the checkpoint's own (as `npformer predict` chooses it) or, for seeded
    weights, the family's own recipe (its published checkpoints'). `Chosen.description` says which."""
    if family not in FAMILIES:
        raise InputError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    wanted = FAMILIES[family]
    env = os.environ if env is None else env
    notes = []
    candidates = []
    if weights is not None:
        candidates.append(Path(weights))
    elif env.get(WEIGHTS_ENV):
        candidates.append(Path(env[WEIGHTS_ENV]))
    seeded = bool(candidates) and str(candidates[0]) == "seeded"
    for path in [] if seeded else candidates:
        model, metadata = load(path, np.dtype(dtype), attention_generation)
        if model.family == family:
            processor, how = make_processor(None, path, wanted, metadata)
            return Chosen(model, "checkpoint", path, processor, how, _image_size(processor))
        held = FAMILIES[model.family]
        notes.append(f"note: {path} holds {held.article} {held.display} model; this notebook needs "
                     f"{wanted.article} {wanted.display}, so it is not used")
    demo = DEMO_WEIGHTS[family]
    if demo.is_file() and not seeded:
        model, metadata = load(demo, np.dtype(dtype))
        processor, how = make_processor(None, demo, wanted, metadata)
        return Chosen(model, "demo", demo, processor, how, _image_size(processor), tuple(notes))
    variant = seeded_variant or wanted.seeded_variant
    overrides = {"attention_generation": attention_generation or "v2"} if wanted.attention_generations else {}
    config = wanted.config.variant(variant, **overrides)
    heads = max(wanted.schema.ARCHITECTURES)  # the full classifier
    model = model_class(wanted.architecture(heads))(config, seeded_weights(config, heads), dtype=dtype)
    how = wanted.own_recipe
    why = "seeded weights were asked for" if seeded else f"no demo weights at {demo}"
    notes.append(f"note: {why}; seeded weights show the structure, not learned features")
    processor = recipe(how)
    return Chosen(model, "seeded", None, processor, how, _image_size(processor), tuple(notes))


def pixels_to_image(pixel_values) -> np.ndarray:  # [1, 3, H, W] or [3, H, W] -> [H, W, 3] in [0, 1]
    """Pixel values (normalised, any mean/std) back to a displayable RGB image: min-max scaled."""
    x = np.asarray(pixel_values, dtype=np.float64)
    x = x[0] if x.ndim == 4 else x
    x = x.transpose(1, 2, 0)
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
