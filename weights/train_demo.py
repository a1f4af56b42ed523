"""Train npformer's demo weights: a small EfficientFormer and a small SwiftFormer on real digits.

What: scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1797 8×8
grayscale images, values 0..16, 10 classes; the UCI ML hand-written digits data set, CC BY 4.0)
are split 80/20 (`train_test_split(test_size=0.2, random_state=0, stratify=y)`: 1437 train /
360 held-out), scaled to uint8 (value·255/16, rounded) and preprocessed with npformer's own
`EfficientFormerImageProcessor` (bicubic squash to S×S, grey → RGB, mean = std = 0.5), so that
training and inference see identical tensors. Two models are trained from scratch with the
PyTorch REFERENCE classes, seeded, on CPU:

* EfficientFormer: `transformers.EfficientFormerForImageClassificationWithTeacher` (4.40.2),
  trained with cross-entropy on its `logits` (the mean of its two heads);
* SwiftFormer: `timm.models.swiftformer.SwiftFormer` (attention v2, the corrected one),
  trained with cross-entropy on its output (timm returns the mean of its two heads in train mode
  unless `distilled_training` is set).

Both are then converted with npformer's own converter (`npformer.convert_checkpoint`) into
`weights/efficientformer-digits.safetensors` and `weights/swiftformer-digits.safetensors`, with
extra metadata (preprocessor, dataset, split, held-out accuracy, training summary). The script
also writes the torch-free test fixtures in `tests/fixtures/digits/` (held-out images, labels and
both models' PyTorch logits; five example PNGs) and finally checks npformer against PyTorch on
the held-out set (max |Δlogit| ≤ 1e-4, identical accuracy).

How long: about 6 minutes on 2 CPU cores (torch.set_num_threads(2)).

Reproduce (from the repository root):

    pip install -e ".[oracle]" scikit-learn
    python weights/train_demo.py

Results are deterministic for a given torch / numpy / scikit-learn / Pillow build on the same
CPU; other builds may differ in the last bits of the trained weights.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
FIXTURES = ROOT / "tests" / "fixtures" / "digits"
EF_FILE = WEIGHTS / "efficientformer-digits.safetensors"
SF_FILE = WEIGHTS / "swiftformer-digits.safetensors"

SIDE = 112  # input side S: 8×8 digits squashed to S×S (last EfficientFormer stage 4×4 tokens)
SEED = 0
EPOCHS = 40
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 0.05
SHIFT = SIDE // 8  # augmentation: random translation by up to one source pixel (S/8), background padded

DATASET = "scikit-learn load_digits (UCI ML hand-written digits, CC BY 4.0), 1797 images, 10 classes"
SPLIT = "train_test_split(test_size=0.2, random_state=0, stratify=y): 1437 train / 360 held-out"
ID2LABEL = {i: str(i) for i in range(10)}


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# data


def processor():
    from npformer.preprocess import EfficientFormerImageProcessor

    return EfficientFormerImageProcessor(
        size={"height": SIDE, "width": SIDE}, do_center_crop=False, resample=3,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )


def load_data():
    """uint8 images [N, 8, 8], labels, sklearn indices, for train and held-out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(images))
    x_tr, x_te, y_tr, y_te, i_tr, i_te = train_test_split(
        images, labels, index, test_size=0.2, random_state=0, stratify=labels)
    return (x_tr, y_tr, i_tr), (x_te, y_te, i_te)


def preprocess(proc, images: np.ndarray) -> np.ndarray:
    """npformer's processor on uint8 8×8 grayscale images → float32 [N, 3, S, S]."""
    return proc([Image.fromarray(img, mode="L") for img in images])["pixel_values"].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# models


def efficientformer_config():
    import npformer

    fields = dict(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 2, 2], num_meta3d_blocks=1, dim=64, hidden_size=64,
                  key_dim=16, num_attention_heads=4, attention_ratio=2, num_labels=10, id2label=ID2LABEL)
    # resolution: the side of the last stage's token grid for an S×S input (fixes the attention-bias table)
    fields["resolution"] = npformer.EfficientFormerConfig(**fields).last_stage_side(SIDE)
    npformer.EfficientFormerConfig(**fields)  # npformer accepts it
    return fields


def build_efficientformer():
    import transformers

    fields = efficientformer_config()
    config = transformers.EfficientFormerConfig(**fields, label2id={v: k for k, v in ID2LABEL.items()})
    return transformers.EfficientFormerForImageClassificationWithTeacher(config)


SF_LAYERS = [1, 1, 2, 2]
SF_DIMS = [16, 24, 32, 48]


def build_swiftformer():
    from npformer.tools.oracle import import_timm

    import_timm()
    from timm.models.swiftformer import SwiftFormer

    return SwiftFormer(layers=SF_LAYERS, embed_dims=SF_DIMS, num_classes=10)


def logits_of(model, x):
    out = model(x)
    return out if not hasattr(out, "logits") else out.logits


# ---------------------------------------------------------------------------------------------
# training


def shift_batch(x, gen):
    """Translate each image by (dy, dx) ∈ [-SHIFT, SHIFT]², filling with the background (-1)."""
    import torch

    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (SHIFT,) * 4, value=-1.0)
    d = torch.randint(0, 2 * SHIFT + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, d[i, 0]:d[i, 0] + SIDE, d[i, 1]:d[i, 1] + SIDE] for i in range(n)])


def evaluate(model, x, batch=180):
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([logits_of(model, x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def train(name, model, x_tr, y_tr, x_te, y_te):
    import torch

    seed_everything(SEED)
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * ((len(x_tr) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    x_te_t = torch.from_numpy(x_te)
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            logits = logits_of(model, shift_batch(x_tr[idx], gen))
            loss = torch.nn.functional.cross_entropy(logits, y_tr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == EPOCHS - 1:
            acc = (evaluate(model, x_te_t).argmax(1) == y_te).mean()
            print(f"  {name} epoch {epoch + 1:2d}/{EPOCHS}: train loss {total / len(x_tr):.4f}, "
                  f"held-out acc {acc:.4f}, {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    return seconds


def check_gradients(model, x, y):
    """Every trainable parameter receives a gradient from the cross-entropy on the output."""
    import torch

    model.train()
    model.zero_grad()
    torch.nn.functional.cross_entropy(logits_of(model, torch.from_numpy(x)), torch.from_numpy(y)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    model.zero_grad()
    if missing:
        raise RuntimeError(f"{type(model).__name__}: no gradient reaches {missing}")


# ---------------------------------------------------------------------------------------------
# conversion


def add_metadata(path: Path, extra: dict, config_update: dict | None = None) -> None:
    """Rewrite an npformer weight file's metadata with extra string keys (and config fields)."""
    from safetensors.numpy import save_file

    from npformer.checkpoints.weights import load_weights, metadata_config

    tensors, metadata = load_weights(path)
    metadata = dict(metadata)
    if config_update:
        config = metadata_config(metadata)
        config.update(config_update)
        metadata["config"] = json.dumps(config, sort_keys=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={**metadata, **extra})


def main() -> int:
    import torch

    import npformer

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    proc = processor()
    (img_tr, y_tr, i_tr), (img_te, y_te, i_te) = load_data()
    x_tr, x_te = preprocess(proc, img_tr), preprocess(proc, img_te)
    print(f"data: {len(x_tr)} train / {len(x_te)} held-out, pixel_values {x_te.shape[1:]} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    assert len(x_tr) == 1437 and len(x_te) == 360

    preproc_json = json.dumps(proc.to_dict(), sort_keys=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        # -- EfficientFormer (transformers) --------------------------------------------------
        seed_everything(SEED)
        ef = build_efficientformer()
        check_gradients(ef, x_tr[:8], y_tr[:8])
        print(f"EfficientFormer: {sum(p.numel() for p in ef.parameters()):,} parameters, "
              f"config {efficientformer_config()}", flush=True)
        secs = train("EfficientFormer", ef, x_tr, y_tr, x_te, y_te)
        ef_logits = evaluate(ef, torch.from_numpy(x_te)).astype(np.float32)
        ef_acc = float((ef_logits.argmax(1) == y_te).mean())
        ef.save_pretrained(tmp / "ef", safe_serialization=True)
        npformer.convert_checkpoint(tmp / "ef", EF_FILE)
        add_metadata(EF_FILE, {
            "checkpoint": "weights/train_demo.py (transformers save_pretrained directory, temporary)",
            "preprocessor": preproc_json, "dataset": DATASET, "split": SPLIT,
            "heldout_accuracy_pytorch": f"{ef_acc:.4f}",
            "training": (f"transformers EfficientFormerForImageClassificationWithTeacher from scratch, seed {SEED}, "
                         f"{EPOCHS} epochs, batch {BATCH}, AdamW lr {LR} (one-cycle) wd {WEIGHT_DECAY}, "
                         f"cross-entropy (label smoothing 0.1) on the mean logits, random shifts ±{SHIFT} px, "
                         f"{SIDE}x{SIDE} input, {secs:.0f} s on 2 CPU threads"),
        })
        results["efficientformer"] = (ef_logits, ef_acc, secs)

        # -- SwiftFormer (timm, attention v2) -------------------------------------------------
        seed_everything(SEED)
        sf = build_swiftformer()
        assert not sf.distilled_training
        check_gradients(sf, x_tr[:8], y_tr[:8])
        print(f"SwiftFormer: {sum(p.numel() for p in sf.parameters()):,} parameters, "
              f"layers {SF_LAYERS}, embed_dims {SF_DIMS}", flush=True)
        secs = train("SwiftFormer", sf, x_tr, y_tr, x_te, y_te)
        sf_logits = evaluate(sf, torch.from_numpy(x_te)).astype(np.float32)
        sf_acc = float((sf_logits.argmax(1) == y_te).mean())
        torch.save(sf.state_dict(), tmp / "sf.pth")
        npformer.convert_checkpoint(tmp / "sf.pth", SF_FILE)
        add_metadata(SF_FILE, {
            "checkpoint": "weights/train_demo.py (timm state_dict .pth, temporary)",
            "preprocessor": preproc_json, "dataset": DATASET, "split": SPLIT,
            "heldout_accuracy_pytorch": f"{sf_acc:.4f}",
            "training": (f"timm SwiftFormer (attention v2) from scratch, seed {SEED}, "
                         f"{EPOCHS} epochs, batch {BATCH}, AdamW lr {LR} (one-cycle) wd {WEIGHT_DECAY}, "
                         f"cross-entropy (label smoothing 0.1) on the mean logits, random shifts ±{SHIFT} px, "
                         f"{SIDE}x{SIDE} input, {secs:.0f} s on 2 CPU threads"),
        }, config_update={"id2label": {str(k): v for k, v in ID2LABEL.items()}})
        results["swiftformer"] = (sf_logits, sf_acc, secs)

    # -- fixtures ---------------------------------------------------------------------------
    FIXTURES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        FIXTURES / "heldout.npz", images=img_te, labels=y_te.astype(np.int64), sklearn_index=i_te.astype(np.int64),
        efficientformer_logits=results["efficientformer"][0], swiftformer_logits=results["swiftformer"][0])
    (FIXTURES / "preprocessor_config.json").write_text(json.dumps(proc.to_dict(), indent=2, sort_keys=True) + "\n")
    examples = []
    for label in (0, 3, 5, 7, 9):  # the first held-out image of each of these classes
        j = int(np.flatnonzero(y_te == label)[0])
        name = f"digit_{label}_{int(i_te[j])}.png"
        Image.fromarray(img_te[j], mode="L").save(FIXTURES / name)
        examples.append(name)

    # -- verify npformer against PyTorch --------------------------------------------------------
    print("\nverification: npformer (numpy) vs PyTorch on the 360 held-out images")
    ok = True
    for family, path in (("efficientformer", EF_FILE), ("swiftformer", SF_FILE)):
        ref, acc, secs = results[family]
        model = npformer.from_pretrained(path)
        got = np.concatenate([model(x_te[i:i + 60]).logits for i in range(0, len(x_te), 60)])
        diff = float(np.abs(got - ref).max())
        np_acc = float((got.argmax(1) == y_te).mean())
        size = path.stat().st_size
        good = diff <= 1e-4 and np_acc == acc
        ok &= good
        print(f"  {family:15s} trained {secs:5.0f} s | held-out acc PyTorch {acc:.4f} npformer {np_acc:.4f} | "
              f"max |Δlogit| {diff:.2e} | {path.name} {size / 1024:.0f} KiB | {'OK' if good else 'FAIL'}")
    # the PNGs round-trip through npformer's processor to the very same tensors
    for name in examples:
        j = int(np.flatnonzero(i_te == int(name.split("_")[2].split(".")[0]))[0])
        assert np.array_equal(preprocess(proc, [np.asarray(Image.open(FIXTURES / name))])[0], x_te[j])
    print(f"examples: {', '.join(examples)} (re-read and re-preprocessed: identical tensors)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
