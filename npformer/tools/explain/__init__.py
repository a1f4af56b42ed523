"""What the teaching notebooks compute, kept here so that the notebooks only call, print, assert
and plot (`notebooks/`; pictures are drawn there or by `npformer.tools.plots`).

Computation only: NumPy and npformer, never matplotlib. Dimension letters as in `layers.py`:
B batch, C channels (OC out, IC in), H×W spatial size, N = H·W tokens, KH×KW kernel size,
h heads, R the side of EfficientFormer's attention grid (N = R²).

Modules, in the order the notebooks meet them (every name is importable from here):

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
* deliberately broken ports for the golden-oracle workflow;
* EfficientFormerV2's attentions recomputed step by step from their inputs: talking heads, the
  stride-2 attention and its upsample, the attention downsample's local-global query (`v2`).
"""

from .weights import Chosen, DEMO_WEIGHTS, REPO, WEIGHTS_ENV, choose_model, pixels_to_image
from .ops import avg_pool2d_include_pad, batch_norm_textbook, bias_relative_map, conv2d_im2col, conv2d_kernel_offsets, erf_reference, frequency_response, gelu_reference, offset_bias_table, pool_mixer_include_pad, pool_mixer_kernel, valid_counts
from .shapes import ShapeRow, attention_block_names, expected_shapes, format_shape_table, shape_table
from .pictures import attention_maps, channels_by_spread, feature_grid, tokens_to_map, upsample_onto_image
from .additive import additive_attention_steps, attention_flops, attention_input, time_attention
from .ports import MISTAKES, save_port_fixture, simulated_port, swapped_activation, trace_and_compare
from .v2 import (attention4d_steps, input_name, local_global_query_steps, module_input, query_positions, row_distance,
                 talking_heads_effect, talking_heads_shares, talking_heads_weights, upsample_matrix)

__all__ = [
    "Chosen",
    "DEMO_WEIGHTS",
    "REPO",
    "WEIGHTS_ENV",
    "choose_model",
    "pixels_to_image",
    "avg_pool2d_include_pad",
    "batch_norm_textbook",
    "bias_relative_map",
    "conv2d_im2col",
    "conv2d_kernel_offsets",
    "erf_reference",
    "frequency_response",
    "gelu_reference",
    "offset_bias_table",
    "pool_mixer_include_pad",
    "pool_mixer_kernel",
    "valid_counts",
    "ShapeRow",
    "attention_block_names",
    "expected_shapes",
    "format_shape_table",
    "shape_table",
    "attention_maps",
    "channels_by_spread",
    "feature_grid",
    "tokens_to_map",
    "upsample_onto_image",
    "additive_attention_steps",
    "attention_flops",
    "attention_input",
    "time_attention",
    "MISTAKES",
    "save_port_fixture",
    "simulated_port",
    "swapped_activation",
    "trace_and_compare",
    "attention4d_steps",
    "input_name",
    "local_global_query_steps",
    "module_input",
    "query_positions",
    "row_distance",
    "talking_heads_effect",
    "talking_heads_shares",
    "talking_heads_weights",
    "upsample_matrix",
]
