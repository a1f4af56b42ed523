"""Shape tables: what the config's arithmetic predicts for every stage-level output (the family's
`traced_names`), checked against a `Trace` of a forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...models.configuration import conv_out
from ...models.registry import family_of


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


def expected_shapes(config, architecture: str, batch: int, height: int, width: int) -> list[ShapeRow]:
    """Every stage-level output a forward pass names (its family's `traced_names`), with the shape
    the config's arithmetic predicts, in forward order: stem, each stage's downsample and blocks,
    the stage outputs, then the norm and the heads. Computed without running the model:

        stem         two 3×3 stride-2 convolutions (padding 1): side → ⌈side/2⌉ → ⌈side/4⌉
        downsample   one k×k convolution with the config's stride and padding
        blocks       keep the shape; EfficientFormer's flatten turns [B, C, H, W] into [B, H·W, C]
        pooled       [B, C];  heads [B, num_labels]
    """
    names = family_of(config).schema.traced_names(config, architecture)
    widths, (k, s, p) = config.stage_widths, config.downsample_conv
    B = batch
    H, W = (conv_out(conv_out(side, 3, 2, 1), 3, 2, 1) for side in (height, width))
    shape, stage = (B, widths[0], H, W), 0
    rows = []
    for name, kind in names.items():
        if kind == "downsample":
            stage += 1
            H, W = conv_out(H, k, s, p), conv_out(W, k, s, p)
            shape = (B, widths[stage], H, W)
        elif kind == "Flat":
            shape = (B, H * W, widths[stage])
        elif name == "pooled":
            shape = (B, config.width)
        elif name in ("head", "head_dist", "logits"):
            if config.num_labels == 0:
                continue
            shape = (B, config.num_labels)
        rows.append(ShapeRow(name, kind, shape))
    return rows


def shape_table(model, pixel_values) -> list[ShapeRow]:
    """`expected_shapes` for this model and input, with `traced` filled in from a forward pass
    recording exactly those names (a name the forward never reports keeps traced=None)."""
    from ...trace import Trace

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
    return family_of(config).schema.attention_blocks(config)
