"""What the teaching notebooks compute, kept here so that the notebooks only call, print, assert
and plot (`notebooks/`; pictures are drawn there or by `npformer.plots`).

Computation only: NumPy and npformer, never matplotlib. Dimension letters as in `layers.py`:
B batch, C channels (OC out, IC in), H×W spatial size, N = H·W tokens, KH×KW kernel size,
h heads, R the side of EfficientFormer's attention grid (N = R²).

Sections, in the order the notebooks meet them:

* which weights a notebook runs on: `choose_model` (a checkpoint you point at, else the demo
  weights in `weights/`, else seeded weights) and says which;
* convolution three ways (`im2col`, `conv2d_im2col`, `conv2d_kernel_offsets`), BatchNorm written
  out (folding it into a convolution is npformer.fuse);
* the pooling token mixer: the count of valid pixels under each window, the
  `count_include_pad=True` mistake, the mixer's frequency response;
* exact references for erf and GELU;
* the attention bias as a relative-position map;
* shape tables built from the config and checked against a `Trace`;
* feature-map grids and attention maps upsampled onto the image;
* SwiftFormer's additive attention step by step, and the cost of additive against multi-head
  self-attention;
* deliberately broken ports for the golden-oracle workflow.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import layers
from .erf import gelu_tanh
from .errors import InputError

REPO = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = {
    "efficientformer": REPO / "weights" / "efficientformer-digits.safetensors",
    "swiftformer": REPO / "weights" / "swiftformer-digits.safetensors",
}
SEEDED_VARIANTS = {"efficientformer": "l1", "swiftformer": "xs"}
WEIGHTS_ENV = "NPFORMER_WEIGHTS"
ARTICLED = {"efficientformer": "an EfficientFormer", "swiftformer": "a SwiftFormer"}

# ---------------------------------------------------------------------------------------------
# which weights


@dataclass
class Chosen:
    """A model picked for a notebook, and what it runs on.

    `kind` is "checkpoint" (a file or directory the reader pointed at), "demo" (the digits
    weights in `weights/`) or "seeded" (random weights from `npformer.seeded`); `processor` turns
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
            what = f"seeded weights (random, npformer.seeded): {name} {self.variant.upper()}"
        elif self.kind == "demo":
            what = f"demo weights {self.path.relative_to(REPO)} (trained on scikit-learn digits): {name}"
        else:
            what = f"checkpoint {self.path}: {name}"
        lines = [f"{what}, input {self.size}×{self.size}, preprocessing: {self.preprocessing}", *self.notes]
        return "\n".join(lines)

    @property
    def variant(self) -> str:
        from .convert import variant_name

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
    3. seeded weights for `seeded_variant` (default: EfficientFormer L1, SwiftFormer XS; for
       SwiftFormer the attention generation is `attention_generation` or "v2").

    `weights="seeded"` (or NPFORMER_WEIGHTS=seeded) skips straight to 3.

    The processor is the checkpoint's own (as `npformer predict` chooses it) or, for seeded
    weights, the family's published transformers recipe. `Chosen.description` says which."""
    from .cli import load_model, make_processor

    if family not in DEMO_WEIGHTS:
        raise InputError(f"family must be one of {sorted(DEMO_WEIGHTS)}, got {family!r}")
    env = os.environ if env is None else env
    notes = []
    candidates = []
    if weights is not None:
        candidates.append(Path(weights))
    elif env.get(WEIGHTS_ENV):
        candidates.append(Path(env[WEIGHTS_ENV]))
    seeded = bool(candidates) and str(candidates[0]) == "seeded"
    for path in [] if seeded else candidates:
        model, metadata = load_model(path, np.dtype(dtype), attention_generation)
        if model.family == family:
            processor, how = make_processor(None, path, family, metadata)
            return Chosen(model, "checkpoint", path, processor, how, _image_size(processor))
        notes.append(f"note: {path} holds {ARTICLED[model.family]} model; this notebook needs {ARTICLED[family]}, "
                     "so it is not used")
    demo = DEMO_WEIGHTS[family]
    if demo.is_file() and not seeded:
        model, metadata = load_model(demo, np.dtype(dtype))
        processor, how = make_processor(None, demo, family, metadata)
        return Chosen(model, "demo", demo, processor, how, _image_size(processor), tuple(notes))
    from . import EfficientFormerConfig, EfficientFormerForImageClassificationWithTeacher
    from . import SwiftFormerConfig, SwiftFormerForImageClassification
    from .preprocess import recipe

    variant = seeded_variant or SEEDED_VARIANTS[family]
    if family == "efficientformer":
        model = EfficientFormerForImageClassificationWithTeacher(EfficientFormerConfig.variant(variant), dtype=dtype)
        how = "efficientformer-hf"
    else:
        config = SwiftFormerConfig.variant(variant, attention_generation=attention_generation or "v2")
        model = SwiftFormerForImageClassification(config, dtype=dtype)
        how = "swiftformer-hf"
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


# ---------------------------------------------------------------------------------------------
# convolution three ways (the loops are layers.conv2d_naive)


def conv2d_kernel_offsets(x, weight, bias=None, stride=1, padding=0):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """Convolution as a sum over the KH·KW kernel offsets: out = Σ_{i,j} W[:, :, i, j] · shift_{i,j}(x).

    Each term is one [OC, IC] × [IC, OH·OW] matrix product: 9 of them for a 3×3 kernel."""
    B, IC, H, W = x.shape
    OC, _, KH, KW = weight.shape
    OH, OW = layers.conv_output_size(H, W, KH, KW, stride, padding)
    out = np.zeros((B, OC, OH * OW), dtype=x.dtype)
    windows = layers.shifted_windows(x, KH, KW, stride, padding)  # KH·KW × [B, IC, OH, OW], (i, j) row-major
    for t, window in enumerate(windows):
        i, j = divmod(t, KW)
        out += np.matmul(weight[:, :, i, j], window.reshape(B, IC, OH * OW))  # [OC, IC] @ [B, IC, N] -> [B, OC, N]
    out = out.reshape(B, OC, OH, OW)
    return out if bias is None else out + bias.reshape(1, OC, 1, 1)


def conv2d_im2col(x, weight, bias=None, stride=1, padding=0):  # [B, IC, H, W] -> [B, OC, OH, OW]
    """Convolution as one matrix product: W [OC, IC·KH·KW] @ layers.im2col(x) [B, IC·KH·KW, OH·OW]."""
    B, IC, H, W = x.shape
    OC, _, KH, KW = weight.shape
    OH, OW = layers.conv_output_size(H, W, KH, KW, stride, padding)
    out = np.matmul(weight.reshape(OC, -1), layers.im2col(x, KH, KW, stride, padding)).reshape(B, OC, OH, OW)
    return out if bias is None else out + bias.reshape(1, OC, 1, 1)


# ---------------------------------------------------------------------------------------------
# BatchNorm


def batch_norm_textbook(x, running_mean, running_var, weight, bias, eps):  # [B, C, H, W] -> [B, C, H, W]
    """BatchNorm as the paper writes it: (x − μ) / √(σ² + ε) · γ + β, per channel."""
    C = x.shape[1]

    def per_channel(v):
        return v.reshape(1, C, 1, 1)

    return (x - per_channel(running_mean)) / np.sqrt(per_channel(running_var) + eps) * per_channel(weight) + per_channel(bias)


# ---------------------------------------------------------------------------------------------
# the pooling token mixer


def valid_counts(H, W, kernel_size=3) -> np.ndarray:  # -> [H, W]
    """How many real (non-padding) pixels each k×k window holds: 4 / 6 / 9 at corner / edge /
    inside for k = 3. `count_include_pad=False` divides by this; True divides by k² everywhere."""
    return np.outer(layers.valid_count(H, kernel_size), layers.valid_count(W, kernel_size)).astype(int)


def avg_pool2d_include_pad(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """The mistake: average pooling with `count_include_pad=True`, padding zeros counted as pixels
    (at a corner 4 real pixels divided by 9). EfficientFormer uses False: `layers.avg_pool2d`."""
    H, W = x.shape[2:]
    return layers.avg_pool2d(x, kernel_size) * (valid_counts(H, W, kernel_size) / kernel_size**2).astype(x.dtype)


def pool_mixer_include_pad(x, kernel_size=3):  # [B, C, H, W] -> [B, C, H, W]
    """`layers.pool_mixer` with the count_include_pad=True mistake: avgpool_include_pad(x) − x."""
    return avg_pool2d_include_pad(x, kernel_size) - x


def pool_mixer_kernel(kernel_size=3) -> np.ndarray:  # -> [k, k]
    """Away from the border the mixer is a convolution: a box of 1/k² minus 1 at the centre."""
    kernel = np.full((kernel_size, kernel_size), 1.0 / kernel_size**2)
    kernel[kernel_size // 2, kernel_size // 2] -= 1.0
    return kernel


def frequency_response(kernel, n=64) -> np.ndarray:  # [k, k] -> [n, n], zero frequency in the centre
    """|DFT| of a small kernel on an n×n grid, shifted so that the zero frequency is at [n//2, n//2].
    For the pooling mixer it is 0 at zero frequency and largest at the highest: a high-pass filter."""
    padded = np.zeros((n, n))
    k = kernel.shape[0]
    padded[:k, :k] = kernel
    return np.abs(np.fft.fftshift(np.fft.fft2(padded)))


# ---------------------------------------------------------------------------------------------
# erf and GELU: exact references


def erf_reference(x) -> np.ndarray:  # [...] -> [...] float64
    """erf from Python's `math.erf` (the C library's, correctly rounded to ~1 ulp), elementwise."""
    x = np.asarray(x, dtype=np.float64)
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def gelu_reference(x) -> np.ndarray:  # [...] -> [...] float64
    """Exact GELU x·Φ(x) = 0.5·x·(1 + erf(x/√2)) in float64, with `math.erf`."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * (1.0 + erf_reference(x / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------
# EfficientFormer's attention bias


def offset_bias_table(resolution, row_weight=1.0, col_weight=1.0) -> np.ndarray:  # -> [R²]
    """A hand-made bias table, entry |dr|·R + |dc| = −(row_weight·|dr| + col_weight·|dc|): a head
    that prefers nearby keys (1, 1), or keys in its own row (large row_weight, 0)."""
    dr, dc = np.divmod(np.arange(resolution * resolution), resolution)
    return -(row_weight * dr + col_weight * dc)


def bias_relative_map(table, resolution) -> np.ndarray:  # [h, R²] -> [h, 2R−1, 2R−1]
    """The learned bias as a picture of relative position: entry [head, R−1+dr, R−1+dc] is the bias
    any query adds to the key dr rows below and dc columns right of it, table[head, |dr|·R + |dc|].
    The centre is the query itself; the map is mirror-symmetric because only |dr|, |dc| count."""
    offsets = np.arange(-(resolution - 1), resolution)  # [2R − 1]
    index = np.abs(offsets)[:, None] * resolution + np.abs(offsets)[None, :]  # [2R − 1, 2R − 1]
    return np.asarray(table)[:, index]


# ---------------------------------------------------------------------------------------------
# shape tables


@dataclass
class ShapeRow:
    """One row of a shape table: `expected` from the config's arithmetic, `traced` from a forward pass."""

    name: str
    kind: str
    expected: tuple
    traced: tuple | None = None

    @property
    def ok(self) -> bool:
        return self.expected == self.traced


def _conv_side(side, kernel, stride, pad):
    return (side + 2 * pad - kernel) // stride + 1


def expected_shapes(config, architecture: str, batch: int, height: int, width: int) -> list[ShapeRow]:
    """Every stage-level output a forward pass names, with the shape the config's arithmetic
    predicts, in forward order: stem, each stage's downsample and blocks, the stage outputs, then
    the norm and the heads. Computed without running the model:

        stem         two 3×3 stride-2 convolutions (padding 1): side → ⌈side/2⌉ → ⌈side/4⌉
        downsample   one k×k convolution with the config's stride and padding
        blocks       keep the shape; EfficientFormer's flatten turns [B, C, H, W] into [B, H·W, C]
        heads        [B, num_labels]
    """
    swift = config.model_type == "swiftformer"
    if swift:
        from .swiftformer import block_names

        widths = config.embed_dims
        down = (config.down_patch_size, config.down_stride, config.down_pad)
    else:
        from .efficientformer import block_names

        widths = config.hidden_sizes
        down = (config.downsample_patch_size, config.downsample_stride, config.downsample_pad)
    B = batch
    H, W = (_conv_side(_conv_side(s, 3, 2, 1), 3, 2, 1) for s in (height, width))
    shape = (B, widths[0], H, W)
    rows = [ShapeRow("stem", "stem", shape)]
    kinds = {"meta4d": "Meta4D (pool)", "meta3d": "Meta3D (attention)", "flat": "flatten",
             "conv_encoder": "ConvEncoder", "encoder": "encoder (attention)"}
    for stage in range(4):
        if stage > 0 and config.has_downsample(stage):
            H, W = _conv_side(H, *down), _conv_side(W, *down)
            shape = (B, widths[stage], H, W)
            rows.append(ShapeRow(f"stages.{stage}.downsample", "downsample", shape))
        for kind, name in block_names(config, stage):
            if kind == "flat":
                shape = (B, H * W, widths[stage])
            rows.append(ShapeRow(name, kinds[kind], shape))
        rows.append(ShapeRow(f"stages.{stage}", "stage output", shape))
    C = config.width
    if swift:
        if architecture != "SwiftFormerModel":
            rows.append(ShapeRow("norm", "BatchNorm", shape))
            rows.append(ShapeRow("pooled", "mean over positions", (B, C)))
    else:
        rows.append(ShapeRow("norm", "LayerNorm", shape))
        if architecture != "EfficientFormerModel":
            rows.append(ShapeRow("pooled", "mean over tokens", (B, C)))
    heads = {"EfficientFormerForImageClassification": ("head",),
             "EfficientFormerForImageClassificationWithTeacher": ("head", "head_dist", "logits"),
             "SwiftFormerForImageClassification": ("head", "head_dist", "logits")}.get(architecture, ())
    if config.num_labels > 0:
        kinds = {"head": "head", "head_dist": "distillation head", "logits": "(head + head_dist) / 2"}
        rows += [ShapeRow(name, kinds[name], (B, config.num_labels)) for name in heads]
    return rows


def shape_table(model, pixel_values) -> list[ShapeRow]:
    """`expected_shapes` for this model and input, with `traced` filled in from a forward pass
    recording exactly those names (a name the forward never reports keeps traced=None)."""
    from .trace import Trace

    B, _, H, W = np.shape(pixel_values)
    rows = expected_shapes(model.config, type(model).__name__, B, H, W)
    trace = Trace([row.name for row in rows])
    model(pixel_values, trace=trace)
    for row in rows:
        row.traced = tuple(trace.records[row.name].shape) if row.name in trace.records else None
    return rows


def format_shape_table(rows: list[ShapeRow]) -> str:
    """The table as aligned text: name, kind, expected shape, traced shape, OK / NOT OK."""
    def fmt(shape):
        return "-" if shape is None else "[" + ", ".join(map(str, shape)) + "]"

    cells = [("name", "kind", "expected", "traced", "")]
    cells += [(r.name, r.kind, fmt(r.expected), fmt(r.traced), "OK" if r.ok else "NOT OK") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def attention_block_names(config) -> list[str]:
    """Names of the blocks that attend: EfficientFormer's Meta3D blocks, SwiftFormer's encoder blocks."""
    if config.model_type == "swiftformer":
        from .swiftformer import block_names

        return [name for stage in range(4) for kind, name in block_names(config, stage) if kind == "encoder"]
    from .efficientformer import block_names

    return [name for kind, name in block_names(config, 3) if kind == "meta3d"]


# ---------------------------------------------------------------------------------------------
# feature maps and attention maps as pictures


def tokens_to_map(tokens) -> np.ndarray:  # [B, N, C] -> [B, C, R, R]
    """Undo EfficientFormer's flatten (token n = r·R + c, row-major) for a square grid."""
    B, N, C = np.shape(tokens)
    R = math.isqrt(N)
    if R * R != N:
        raise InputError(f"{N} tokens are not a square grid")
    return np.asarray(tokens).transpose(0, 2, 1).reshape(B, C, R, R)


def channels_by_spread(fmap) -> np.ndarray:  # [C, H, W] -> [C] channel indices
    """Channels ordered by their spatial standard deviation, largest first (the busiest first)."""
    fmap = np.asarray(fmap)
    return np.argsort(-fmap.reshape(fmap.shape[0], -1).std(axis=1), kind="stable")


def feature_grid(fmap, count=16, cols=8, pad=1, channels=None) -> np.ndarray:  # [C, H, W] -> [rows·(H+pad)−pad, cols·(W+pad)−pad]
    """`count` channels of one feature map tiled into one picture, each min-max scaled to [0, 1]
    on its own (a constant channel is 0), separated by `pad` pixels of NaN (drawn blank).

    `channels`: which channels, in order (default: `channels_by_spread`, the busiest first)."""
    fmap = np.asarray(fmap, dtype=np.float64)
    C, H, W = fmap.shape
    channels = channels_by_spread(fmap)[: min(count, C)] if channels is None else np.asarray(channels)
    cols = min(cols, len(channels))
    rows = -(-len(channels) // cols)
    grid = np.full((rows * (H + pad) - pad, cols * (W + pad) - pad), np.nan)
    for n, c in enumerate(channels):
        tile = fmap[c]
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        r, k = divmod(n, cols)
        grid[r * (H + pad) : r * (H + pad) + H, k * (W + pad) : k * (W + pad) + W] = tile
    return grid


def attention_maps(probs, query=None) -> np.ndarray:  # [h, N, N] -> [h, R, R]
    """Each head's attention over the key grid: the row of token `query` (an index n = r·R + c),
    or, with query=None, the mean over all queries (how much attention each key receives).
    Every map sums to 1 (each row of `probs` does)."""
    probs = np.asarray(probs)
    h, N, _ = probs.shape
    R = math.isqrt(N)
    if R * R != N:
        raise InputError(f"attention over {N} tokens is not a square grid")
    rows = probs.mean(axis=1) if query is None else probs[:, query, :]  # [h, N]
    return rows.reshape(h, R, R)


def upsample_onto_image(maps, height, width, keep="sum") -> np.ndarray:  # [h, R, R] -> [h, height, width]
    """Each token's value over the pixels it covers (pixel y belongs to token row ⌊y·R/height⌋).

    keep="sum": the value is spread evenly over those pixels, so every map keeps its sum (a map of
    probabilities still sums to 1); keep="value": each pixel simply takes its token's value."""
    if keep not in ("sum", "value"):
        raise InputError(f"keep must be 'sum' or 'value', got {keep!r}")
    maps = np.asarray(maps, dtype=np.float64)
    h, R, RC = maps.shape
    ry = np.arange(height) * R // height  # [height] token row of each pixel row
    rx = np.arange(width) * RC // width  # [width]
    if keep == "sum":
        pixels_per_token = np.bincount(ry, minlength=R)[:, None] * np.bincount(rx, minlength=RC)[None, :]  # [R, R]
        maps = maps / pixels_per_token
    return maps[:, ry][:, :, rx]


# ---------------------------------------------------------------------------------------------
# SwiftFormer's additive attention, step by step


def additive_attention_steps(x, weights: dict, name: str, generation: str) -> dict:  # [B, N, C] -> {step: array}
    """SwiftFormer's efficient additive attention with every intermediate kept, for the block
    `name` (e.g. "stages.3.blocks.1.attn") of a weight dict with timm's names:

        q, k       [B, N, C]  to_query(x), to_key(x)
        q_hat, k_hat          L2-normalised over channels (each token a unit vector)
        scores     [B, N, 1]  q̂·w_g / √C, one score per token
        weights    [B, N, 1]  v1: softmax over the last axis (size 1: all exactly 1)
                              v2: the scores L2-normalised over the N tokens
        global_query [B, 1, C]  Σ_n weights_n · q̂_n
        out        [B, N, C]  final(proj(G ⊙ k̂) + q̂)

    The model computes the same in `npformer.swiftformer.additive_attention`."""
    if generation not in ("v1", "v2"):
        raise InputError(f"generation must be 'v1' or 'v2', got {generation!r}")

    def w(key):
        return weights[f"{name}.{key}"]

    C = x.shape[-1]
    s = {}
    s["q"] = layers.linear(x, w("to_query.weight"), w("to_query.bias"))  # [B, N, C]
    s["k"] = layers.linear(x, w("to_key.weight"), w("to_key.bias"))  # [B, N, C]
    s["q_hat"] = layers.l2_normalize(s["q"], axis=-1)
    s["k_hat"] = layers.l2_normalize(s["k"], axis=-1)
    s["scores"] = np.matmul(s["q_hat"], w("w_g")) * C**-0.5  # [B, N, 1]
    if generation == "v1":
        s["weights"] = layers.softmax(s["scores"], axis=-1)  # softmax over one element: 1
    else:
        s["weights"] = layers.l2_normalize(s["scores"], axis=1)  # over the tokens
    s["global_query"] = np.sum(s["weights"] * s["q_hat"], axis=1, keepdims=True)  # [B, 1, C]
    mixed = layers.linear(s["global_query"] * s["k_hat"], w("proj.weight"), w("proj.bias")) + s["q_hat"]
    s["out"] = layers.linear(mixed, w("final.weight"), w("final.bias"))  # [B, N, C]
    return s


def attention_input(model, pixel_values, block: str):  # -> ([B, N, C] tokens, [B, N, C] the model's attention output)
    """The tokens SwiftFormer's encoder block `block` feeds its attention (the local
    representation's output, flattened row-major) and what the model's attention returned."""
    from .trace import Trace

    trace = Trace([f"{block}.local_representation", f"{block}.attn"])
    model(pixel_values, trace=trace)
    x = trace[f"{block}.local_representation"]  # [B, C, H, W]
    B, C, H, W = x.shape
    return x.transpose(0, 2, 3, 1).reshape(B, H * W, C), trace[f"{block}.attn"]


def attention_flops(tokens: int, channels: int) -> dict:
    """Floating-point operations (a multiply-add counts 2) of one token mixer on N tokens of C
    channels, batch 1, softmax and normalisations left out:

        multi-head self-attention  qkv and proj linears 2·N·C·4C, plus q·kᵀ and probs·v 2·2·N²·C
                                   (however C is split over the heads)
        additive attention         to_query, to_key, proj and final linears 2·N·C·4C, plus q̂·w_g,
                                   Σ α·q̂ and G ⊙ k̂, about 3·2·N·C

    Both pay the same 8·N·C² for their linear layers; only multi-head attention pays N²."""
    N, C = tokens, channels
    linears = 2 * N * C * 4 * C
    return {"multi-head": linears + 2 * 2 * N * N * C, "additive": linears + 3 * 2 * N * C}


def time_attention(tokens: int, channels: int = 64, heads: int = 4, repeats: int = 5, seed: int = 0) -> dict:
    """Wall time in seconds of one forward of each token mixer on [1, N, C] random tokens, the
    fastest of `repeats` runs after a warm-up (the minimum is the least disturbed by other work):
    "additive" (`additive_attention_steps`, v2) and "multi-head" (`layers.multi_head_attention`,
    `heads` heads of key and value dim C/heads, no bias). Measured, so noisy: compare shapes, not
    values."""
    rng = np.random.default_rng(seed)
    C = channels
    x = rng.standard_normal((1, tokens, C)).astype(np.float32)

    def mat(*shape):
        return (rng.standard_normal(shape) * shape[-1] ** -0.5).astype(np.float32)

    additive = {f"a.{n}.weight": mat(C, C) for n in ("to_query", "to_key", "proj", "final")}
    additive |= {f"a.{n}.bias": np.zeros(C, np.float32) for n in ("to_query", "to_key", "proj", "final")}
    additive["a.w_g"] = mat(C, 1)
    dk = C // heads
    qkv_w, qkv_b = mat(3 * C, C), np.zeros(3 * C, np.float32)
    proj_w, proj_b = mat(C, C), np.zeros(C, np.float32)
    runs = {
        "additive": lambda: additive_attention_steps(x, additive, "a", "v2"),
        "multi-head": lambda: layers.multi_head_attention(x, qkv_w, qkv_b, proj_w, proj_b, 0.0, heads, dk),
    }
    times = {}
    for kind, run in runs.items():
        run()  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        times[kind] = min(samples)
    return times


# ---------------------------------------------------------------------------------------------
# deliberately broken ports (the golden-oracle notebook)


@contextmanager
def swapped_activation(name: str, fn=gelu_tanh):
    """Within the block, every npformer model looks up activation `name` as `fn` (default: the
    tanh GELU in place of the exact one) — a port with the wrong GELU, made by monkeypatching
    `npformer.layers.ACTIVATIONS` at run time. Restored on exit."""
    original = layers.ACTIVATIONS[name]
    layers.ACTIVATIONS[name] = fn
    try:
        yield
    finally:
        layers.ACTIVATIONS[name] = original


MISTAKES = {
    "no attention bias": "the port forgets the learned attention bias (EfficientFormer)",
    "qkv as q|k|v blocks": "the port splits the qkv projection into a q block, a k block and a v block "
                           "instead of per head [q | k | v] (EfficientFormer)",
    "LayerNorm eps 1e-5": "the port uses LayerNorm eps 1e-5 where the config says 1e-12 (EfficientFormer)",
    "other attention generation": "the port runs SwiftFormer's other additive attention (v1 ↔ v2)",
}


def simulated_port(model, mistake: str):
    """A model of the same class that makes one of `MISTAKES`, built from a changed copy of the
    weights or config (the code stays npformer's):

    * "no attention bias": every `attention_biases` table zeroed;
    * "qkv as q|k|v blocks": the qkv rows permuted so that npformer's per-head reading of the new
      weights gives what a block-wise reading of the original weights gives;
    * "LayerNorm eps 1e-5": the config's layer_norm_eps set to 1e-5;
    * "other attention generation": SwiftFormer's attention_generation flipped."""
    import dataclasses

    config, weights = model.config, dict(model.weights)
    if mistake == "no attention bias":
        weights = {k: np.zeros_like(v) if k.endswith("attention_biases") else v for k, v in weights.items()}
    elif mistake == "qkv as q|k|v blocks":
        h, dk, dv = config.num_attention_heads, config.key_dim, config.attention_ratio * config.key_dim
        blocks = np.arange(h * (2 * dk + dv))  # row r of the block layout: [q of all heads | k ... | v ...]
        q, k, v = np.split(blocks, [h * dk, 2 * h * dk])
        order = np.concatenate([np.concatenate([q[i * dk:(i + 1) * dk], k[i * dk:(i + 1) * dk], v[i * dv:(i + 1) * dv]])
                                for i in range(h)])  # the rows a block-wise port uses, in per-head order
        weights = {key: val[order] if ".qkv." in key else val for key, val in weights.items()}
    elif mistake == "LayerNorm eps 1e-5":
        config = dataclasses.replace(config, layer_norm_eps=1e-5)
    elif mistake == "other attention generation":
        other = {"v1": "v2", "v2": "v1"}[config.attention_generation]
        config = dataclasses.replace(config, attention_generation=other)
    else:
        raise InputError(f"unknown mistake {mistake!r}; known: {', '.join(MISTAKES)}")
    return type(model)(config, weights, dtype=model.dtype)


def trace_and_compare(reference, port, pixels, directory, atol=1e-4, rtol=1e-4, port_context=nullcontext):
    """Trace `reference` and `port` on the same pixels into `directory`/golden.safetensors and
    `directory`/port.safetensors (`port` runs inside `port_context()`, e.g. `swapped_activation`)
    and compare port against golden (`oracle_tools.compare_fixtures`). Returns the Comparison."""
    from .oracle_tools import compare_fixtures, trace_to_fixture

    directory = Path(directory)
    trace_to_fixture(reference, pixels, directory / "golden.safetensors")
    with port_context():
        trace_to_fixture(port, pixels, directory / "port.safetensors")
    return compare_fixtures(directory / "port.safetensors", directory / "golden.safetensors", atol=atol, rtol=rtol)


def save_port_fixture(path, tensors: dict) -> None:
    """Write a port's own activations ({trace name: array}, in forward order) as a fixture that
    `compare_fixtures` / `npformer compare` accept: the tensors plus metadata format and names."""
    import json

    from safetensors.numpy import save_file

    from .oracle_tools import FIXTURE_FORMAT

    metadata = {"format": FIXTURE_FORMAT, "names": json.dumps([n for n in tensors if n != "input"])}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
