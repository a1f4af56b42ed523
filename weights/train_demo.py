"""Train npformer's demo weights: a small EfficientFormer, SwiftFormer and EfficientFormerV2 on real digits.

What: scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1797 8×8
grayscale images, values 0..16, 10 classes; the UCI ML hand-written digits data set, CC BY 4.0)
are split 80/20 (`train_test_split(test_size=0.2, random_state=0, stratify=y)`: 1437 train /
360 held-out), scaled to uint8 (value·255/16, rounded) and preprocessed with npformer's own
`EfficientFormerImageProcessor` (bicubic squash to S×S, grey → RGB, mean = std = 0.5), so that
training and inference see identical tensors. Three models are trained from scratch with the
PyTorch REFERENCE classes, seeded, on CPU:

* EfficientFormer: `transformers.EfficientFormerForImageClassificationWithTeacher` (4.40.2),
  trained with cross-entropy on its `logits` (the mean of its two heads), S = 112;
* SwiftFormer: `timm.models.swiftformer.SwiftFormer` (attention v2, the corrected one),
  trained with cross-entropy on its output (timm returns the mean of its two heads in train mode
  unless `distilled_training` is set), S = 112;
* EfficientFormerV2: `timm.models.efficientformer_v2.EfficientFormerV2` (built by npformer's
  oracle builder, `npformer.models.efficientformerv2.reference.timm_model`), trained like
  SwiftFormer on the mean of its two heads, S = 128: V2's stage-2 grid must have an even side
  (it attends at half that side and upsamples ×2), and 112 px gives 7 (refused), 128 px gives
  stage sides 32/16/8/4.

They are then converted with npformer's own converter (`npformer.convert_checkpoint`) into
`weights/efficientformer-digits.safetensors`, `weights/swiftformer-digits.safetensors` and
`weights/efficientformerv2-digits.safetensors`, with extra metadata (preprocessor, dataset,
split, held-out accuracy, training summary). The script also writes the torch-free test fixtures
in `tests/fixtures/digits/` (held-out images, labels and the first two models' PyTorch logits
in heldout.npz, five example PNGs; EfficientFormerV2's logits in heldout_v2.npz and its
processor in preprocessor_config_v2.json) and finally checks npformer against PyTorch on the
held-out set (max |Δlogit| ≤ 1e-4, identical accuracy). `--families` picks which models to
train (default all three); each writes only its own files, EfficientFormer and SwiftFormer
together (they share heldout.npz).

How long, on 2 CPU cores (torch.set_num_threads(2)): EfficientFormer and SwiftFormer 4–6
minutes (the shipped files record 168 s and 160 s of training; a rerun on a quiet machine took
104 s and 128 s, 238 s in all); EfficientFormerV2 about 4.5 minutes (training 259 s, 267 s in
all). On a machine shared with other work, `--threads 1` avoids two torch threads waiting for a
busy core (one 2-thread V2 run trained for 905 s that way); the V2 run then takes about 7.5
minutes and gives other weights (held-out accuracy 0.9944 where 2 threads give 0.9972).

Reproduce (from the repository root):

    pip install -e ".[oracle]" scikit-learn
    python weights/train_demo.py                                 # all three
    python weights/train_demo.py --families efficientformerv2    # only V2's files

Results are deterministic for a given torch / numpy / scikit-learn / Pillow build on the same
CPU with the same thread count (two runs each, at 1 and at 2 threads, gave bit-identical V2
weights); other builds, or another thread count, may differ in the last bits of the trained
weights and from there on.
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
V2_FILE = WEIGHTS / "efficientformerv2-digits.safetensors"
FAMILIES = ("efficientformer", "swiftformer", "efficientformerv2")

SIDE = 112  # input side S: 8×8 digits squashed to S×S (last EfficientFormer stage 4×4 tokens)
SEED = 0
EPOCHS = 40
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 0.05
SHIFT = SIDE // 8  # augmentation: random translation by up to one source pixel (S/8), background padded
THREADS = 2  # torch CPU threads (--threads)

# EfficientFormerV2 attends on a stage-2 grid whose side must be even (it attends at half that side
# and upsamples ×2): 112 px gives ⌈112/16⌉ = 7, refused; 128 px gives stage sides 32/16/8/4
V2_SIDE = 128
V2_SHIFT = V2_SIDE // 8
V2_EPOCHS = EPOCHS
V2_LR = LR

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


def processor(side=SIDE):
    from npformer.preprocess import EfficientFormerImageProcessor

    return EfficientFormerImageProcessor(
        size={"height": side, "width": side}, do_center_crop=False, resample=3,
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


V2_FIELDS = dict(widths=[16, 24, 32, 48], depths=[1, 1, 2, 2], num_vit=1, mlp_ratios=[[4], [4], [4, 3], [3, 4]],
                 num_labels=10, distillation=True, image_size=V2_SIDE)


def efficientformerv2_config():
    """The demo V2's npformer config (timm fixes the attention sizes: 8 heads, key dim 32, attn ratio 4)."""
    import npformer

    return npformer.EfficientFormerV2Config(**V2_FIELDS, id2label=ID2LABEL)


def build_efficientformerv2():
    """timm's EfficientFormerV2 for that config, built by the oracle's own reference builder."""
    from npformer.models.efficientformerv2.reference import timm_model

    model, _ = timm_model(efficientformerv2_config())
    return model


def logits_of(model, x):
    out = model(x)
    return out if not hasattr(out, "logits") else out.logits


# ---------------------------------------------------------------------------------------------
# training


def shift_batch(x, gen, shift=SHIFT):
    """Translate each image by (dy, dx) ∈ [-shift, shift]², filling with the background (-1)."""
    import torch

    n, side = x.shape[0], x.shape[-1]
    padded = torch.nn.functional.pad(x, (shift,) * 4, value=-1.0)
    d = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, d[i, 0]:d[i, 0] + side, d[i, 1]:d[i, 1] + side] for i in range(n)])


def evaluate(model, x, batch=180):
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([logits_of(model, x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def train(name, model, x_tr, y_tr, x_te, y_te, epochs=EPOCHS, lr=LR, shift=SHIFT):
    import torch

    seed_everything(SEED)
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    steps = epochs * ((len(x_tr) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    x_te_t = torch.from_numpy(x_te)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            logits = logits_of(model, shift_batch(x_tr[idx], gen, shift))
            loss = torch.nn.functional.cross_entropy(logits, y_tr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 4 or epoch == epochs - 1:
            acc = (evaluate(model, x_te_t).argmax(1) == y_te).mean()
            print(f"  {name} epoch {epoch + 1:2d}/{epochs}: train loss {total / len(x_tr):.4f}, "
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


def training_summary(what, epochs, lr, shift, side, secs, threads):
    return (f"{what} from scratch, seed {SEED}, {epochs} epochs, batch {BATCH}, AdamW lr {lr} (one-cycle) "
            f"wd {WEIGHT_DECAY}, cross-entropy (label smoothing 0.1) on the mean logits, random shifts ±{shift} px, "
            f"{side}x{side} input, {secs:.0f} s on {threads} CPU thread{'s' if threads != 1 else ''}")


def train_efficientformer(tmp: Path, x_tr, y_tr, x_te, y_te, preproc_json, threads):
    """transformers' EfficientFormer with teacher head → EF_FILE; returns (held-out logits, accuracy, seconds)."""
    import torch

    import npformer

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
        "training": training_summary("transformers EfficientFormerForImageClassificationWithTeacher",
                                     EPOCHS, LR, SHIFT, SIDE, secs, threads),
    })
    return ef_logits, ef_acc, secs


def train_swiftformer(tmp: Path, x_tr, y_tr, x_te, y_te, preproc_json, threads):
    """timm's SwiftFormer (attention v2) → SF_FILE; returns (held-out logits, accuracy, seconds)."""
    import torch

    import npformer

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
        "training": training_summary("timm SwiftFormer (attention v2)", EPOCHS, LR, SHIFT, SIDE, secs, threads),
    }, config_update={"id2label": {str(k): v for k, v in ID2LABEL.items()}})
    return sf_logits, sf_acc, secs


def train_efficientformerv2(tmp: Path, x_tr, y_tr, x_te, y_te, preproc_json, threads):
    """timm's EfficientFormerV2 (both heads) at V2_SIDE px → V2_FILE; returns (held-out logits, accuracy, seconds)."""
    import torch

    import npformer

    seed_everything(SEED)
    v2 = build_efficientformerv2()
    assert not v2.distilled_training  # train mode returns the mean of the two heads, as eval does
    check_gradients(v2, x_tr[:8], y_tr[:8])
    print(f"EfficientFormerV2: {sum(p.numel() for p in v2.parameters()):,} parameters, {V2_FIELDS}", flush=True)
    secs = train("EfficientFormerV2", v2, x_tr, y_tr, x_te, y_te, epochs=V2_EPOCHS, lr=V2_LR, shift=V2_SHIFT)
    # evaluate() calls eval(), which clears timm's cache of gathered attention biases (filled in eval mode
    # and not refreshed by later weight changes): these logits use the final biases
    v2_logits = evaluate(v2, torch.from_numpy(x_te)).astype(np.float32)
    v2_acc = float((v2_logits.argmax(1) == y_te).mean())
    torch.save(v2.state_dict(), tmp / "v2.pth")
    npformer.convert_checkpoint(tmp / "v2.pth", V2_FILE)
    add_metadata(V2_FILE, {
        "checkpoint": "weights/train_demo.py (timm state_dict .pth, temporary)",
        "preprocessor": preproc_json, "dataset": DATASET, "split": SPLIT,
        "heldout_accuracy_pytorch": f"{v2_acc:.4f}",
        "training": training_summary("timm EfficientFormerV2 (distillation head, no teacher)",
                                     V2_EPOCHS, V2_LR, V2_SHIFT, V2_SIDE, secs, threads),
    }, config_update={"id2label": {str(k): v for k, v in ID2LABEL.items()}})
    return v2_logits, v2_acc, secs


def verify(results: dict, files: dict, pixels: dict, y_te) -> bool:
    """npformer's logits from each converted file against PyTorch's on the held-out set."""
    import npformer

    print("\nverification: npformer (numpy) vs PyTorch on the 360 held-out images")
    ok = True
    for family, (ref, acc, secs) in results.items():
        path, x_te = files[family], pixels[family]
        model = npformer.from_pretrained(path)
        got = np.concatenate([model(x_te[i:i + 60]).logits for i in range(0, len(x_te), 60)])
        diff = float(np.abs(got - ref).max())
        np_acc = float((got.argmax(1) == y_te).mean())
        size = path.stat().st_size
        good = diff <= 1e-4 and np_acc == acc
        ok &= good
        print(f"  {family:17s} trained {secs:5.0f} s | held-out acc PyTorch {acc:.4f} npformer {np_acc:.4f} | "
              f"max |Δlogit| {diff:.2e} | {path.name} {size / 1024:.0f} KiB | {'OK' if good else 'FAIL'}")
    return ok


def parse_args(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), metavar="FAMILY",
                        help=f"which demo models to train: {', '.join(FAMILIES)} (default: all three); "
                             "efficientformer and swiftformer share heldout.npz, so they go together")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"torch CPU threads (default {THREADS}; the timings quoted are for 2)")
    args = parser.parse_args(argv)
    if ("efficientformer" in args.families) != ("swiftformer" in args.families):
        parser.error("efficientformer and swiftformer write one fixture file together "
                     "(tests/fixtures/digits/heldout.npz): train both or neither")
    return args


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    (img_tr, y_tr, i_tr), (img_te, y_te, i_te) = load_data()
    v1 = "efficientformer" in args.families  # EfficientFormer and SwiftFormer: 112 px, heldout.npz
    results, pixels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if v1:
            proc = processor()
            x_tr, x_te = preprocess(proc, img_tr), preprocess(proc, img_te)
            print(f"data: {len(x_tr)} train / {len(x_te)} held-out, pixel_values {x_te.shape[1:]} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            assert len(x_tr) == 1437 and len(x_te) == 360
            preproc_json = json.dumps(proc.to_dict(), sort_keys=True)

            # -- EfficientFormer (transformers) --------------------------------------------------
            results["efficientformer"] = train_efficientformer(tmp, x_tr, y_tr, x_te, y_te, preproc_json, args.threads)
            # -- SwiftFormer (timm, attention v2) -------------------------------------------------
            results["swiftformer"] = train_swiftformer(tmp, x_tr, y_tr, x_te, y_te, preproc_json, args.threads)
            pixels |= {"efficientformer": x_te, "swiftformer": x_te}

        if "efficientformerv2" in args.families:
            # -- EfficientFormerV2 (timm), 128 px ----------------------------------------------------
            proc_v2 = processor(V2_SIDE)
            x_tr2, x_te2 = preprocess(proc_v2, img_tr), preprocess(proc_v2, img_te)
            print(f"data (EfficientFormerV2): pixel_values {x_te2.shape[1:]}", flush=True)
            results["efficientformerv2"] = train_efficientformerv2(
                tmp, x_tr2, y_tr, x_te2, y_te, json.dumps(proc_v2.to_dict(), sort_keys=True), args.threads)
            pixels["efficientformerv2"] = x_te2

    # -- fixtures ---------------------------------------------------------------------------
    FIXTURES.mkdir(parents=True, exist_ok=True)
    examples = []
    if v1:
        np.savez_compressed(
            FIXTURES / "heldout.npz", images=img_te, labels=y_te.astype(np.int64), sklearn_index=i_te.astype(np.int64),
            efficientformer_logits=results["efficientformer"][0], swiftformer_logits=results["swiftformer"][0])
        (FIXTURES / "preprocessor_config.json").write_text(json.dumps(proc.to_dict(), indent=2, sort_keys=True) + "\n")
        for label in (0, 3, 5, 7, 9):  # the first held-out image of each of these classes
            j = int(np.flatnonzero(y_te == label)[0])
            name = f"digit_{label}_{int(i_te[j])}.png"
            Image.fromarray(img_te[j], mode="L").save(FIXTURES / name)
            examples.append(name)
    if "efficientformerv2" in results:  # the same held-out images as heldout.npz, at 128 px
        np.savez_compressed(FIXTURES / "heldout_v2.npz", efficientformerv2_logits=results["efficientformerv2"][0])
        (FIXTURES / "preprocessor_config_v2.json").write_text(
            json.dumps(proc_v2.to_dict(), indent=2, sort_keys=True) + "\n")

    # -- verify npformer against PyTorch --------------------------------------------------------
    files = {"efficientformer": EF_FILE, "swiftformer": SF_FILE, "efficientformerv2": V2_FILE}
    ok = verify(results, files, pixels, y_te)
    # the PNGs round-trip through npformer's processor to the very same tensors
    for name in examples:
        j = int(np.flatnonzero(i_te == int(name.split("_")[2].split(".")[0]))[0])
        assert np.array_equal(preprocess(proc, [np.asarray(Image.open(FIXTURES / name))])[0], x_te[j])
    if examples:
        print(f"examples: {', '.join(examples)} (re-read and re-preprocessed: identical tensors)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
