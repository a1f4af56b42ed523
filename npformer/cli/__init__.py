"""The `npformer` command line: predict, convert, shapes, parity, trace, compare, evaluate, for every family.

    npformer predict cat.png --weights efficientformer-l1.safetensors
    npformer predict cat.png --weights ./swiftformer-xs/               # a transformers directory
    npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors
    npformer convert SwiftFormer_XS.pth swiftformer-xs.safetensors --attention v1
    npformer shapes --variant swiftformer-xs --size 256
    npformer shapes --variant efficientformerv2-s0
    npformer convert efficientformerv2_s0.snap_dist_in1k.safetensors efficientformerv2-s0.safetensors
    npformer parity --families swiftformer --variants xs --batch 1
    npformer trace cat.png golden.safetensors --dtype float64
    npformer compare port.safetensors golden.safetensors --atol 1e-5
    npformer evaluate tests/fixtures/digits/heldout --output results.jsonl

`main(argv)` returns the exit status. Expected errors (every `NpformerError`) print one line,
`npformer: error: <message>`, to stderr and exit with the error's `exit_code`; usage errors
exit 2 as argparse does; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from .._version import __version__
from ..errors import NpformerError
from ..models.registry import FAMILIES
from ..models.attention_bias import STRATEGIES
from .commands import SHAPE_VARIANTS, cmd_convert, cmd_predict, cmd_shapes, stage_level_names, top_k
from . import evaluate
from .common import (DEFAULT_WEIGHTS, DEMO_WEIGHTS, EXIT_CODES, GENERATIONS, NO_DEFAULT_WEIGHTS, MissingExtraError,
                     UsageError, one_line, positive_int)
from .oracle import REFERENCES, cmd_compare, cmd_parity, cmd_trace, missing_extras, oracle_available, parity_variants

__all__ = ["main", "build_parser", "DEMO_WEIGHTS", "DEFAULT_WEIGHTS", "NO_DEFAULT_WEIGHTS", "EXIT_CODES", "UsageError",
           "MissingExtraError", "SHAPE_VARIANTS", "stage_level_names", "top_k", "missing_extras", "oracle_available"]


def _wrap(text: str, width: int = 88) -> str:
    """Fill each paragraph of a description (the raw formatter keeps the epilog examples as written)."""
    return "\n\n".join(
        "\n".join(textwrap.fill(line, width) for line in para.split("\n")) for para in text.split("\n\n")
    )


def build_parser() -> argparse.ArgumentParser:
    from ..preprocess.recipes import RECIPES

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="npformer",
        description=_wrap("EfficientFormer (L1, L3, L7), SwiftFormer (XS, S, L1, L3) and EfficientFormerV2 (S0, S1, "
                          "S2, L) in pure NumPy: classify images, convert checkpoints, inspect shapes, check parity "
                          "with transformers and timm, write and compare golden-value fixtures, evaluate on a dataset."),
        epilog="examples:\n"
               "  npformer predict cat.png --weights efficientformer-l1.safetensors\n"
               "  npformer predict cat.png --weights ./swiftformer-xs/          # a transformers directory\n"
               "  npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors\n"
               "  npformer convert SwiftFormer_XS.pth swiftformer-xs.safetensors --attention v1\n"
               "  npformer shapes --variant l3\n"
               "  npformer shapes --variant swiftformer-xs --size 256\n"
               "  npformer shapes --variant efficientformerv2-s0\n"
               "  npformer parity --families swiftformer --variants xs --batch 1\n"
               "  npformer evaluate tests/fixtures/digits/heldout --output results.jsonl\n\n"
               "run 'npformer COMMAND --help' for a command's options.\n\n" + EXIT_CODES,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"npformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    weights_help = ("an npformer .safetensors file, a transformers model directory (config.json + "
                    "model.safetensors, pytorch_model.bin or TensorFlow's tf_model.h5, the last with the h5 "
                    "extra), or an original / timm .pth checkpoint")
    # options several commands share, each declared once
    attention = argparse.ArgumentParser(add_help=False)
    attention.add_argument("--attention", choices=GENERATIONS,
                           help="SwiftFormer's attention generation, needed for original Amshaker/SwiftFormer "
                                "checkpoints, which do not record it: v1 for the first release (before 2023-07-26: "
                                "softmax over a size-1 axis), v2 for the retrained ones (L2 normalisation over "
                                "tokens). transformers checkpoints are always v1, timm checkpoints v2, npformer "
                                "files record theirs; a --variant's shapes do not depend on it")
    weights = argparse.ArgumentParser(add_help=False)
    weights.add_argument("--weights", metavar="PATH", help=f"the checkpoint: {weights_help} (default: the demo "
                                                            f"weights, {DEMO_WEIGHTS.name})")
    sizing = argparse.ArgumentParser(add_help=False)
    sizing.add_argument("--size", type=positive_int, nargs="+", metavar="PX",
                        help="run at this input size: one side, or HEIGHT WIDTH (default: the size the model is "
                             "built for; images are preprocessed to it). An EfficientFormer or EfficientFormerV2 "
                             "size whose attention grid differs from the checkpoint's needs --bias-resize")
    sizing.add_argument("--bias-resize", choices=tuple(STRATEGIES), metavar="STRATEGY",
                        help="how the attention biases follow another size: 'table' resamples each head's offset "
                             "table to the new grid once (bicubic, antialias; timm's LeViT resize), 'pairwise' "
                             "resizes the gathered [heads, N, N] bias to each input's token count (bicubic; the "
                             "original detection/segmentation backbones). Never applied silently")
    forward = argparse.ArgumentParser(add_help=False)
    forward.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                         help="compute dtype of the forward pass (and of the tensors `trace` writes; default float32)")
    forward.add_argument("--processor", metavar="RECIPE_OR_PATH",
                         help="preprocessing of an image: a recipe (" + ", ".join(RECIPES) + "; see "
                              "npformer.preprocess.RECIPES), 'published' / 'default' (the model family's "
                              "transformers settings: the published checkpoints' / transformers' code defaults), "
                              "or a preprocessor_config.json file or a directory holding one")

    p = sub.add_parser(
        "predict", parents=[weights, attention, forward, sizing],
        help="classify images: top-K classes with probabilities",
        description=_wrap("Classify images with an EfficientFormer, SwiftFormer or EfficientFormerV2 checkpoint and "
                          "print the top-K "
                          "classes: rank, class index, probability (softmax of the logits), logit and label.\n\n"
                          "Preprocessing (named in each header line): --processor if given; else the weights "
                          "directory's preprocessor_config.json if it has one; else the recipe of the checkpoint's "
                          "origin (the recipe a converted file records): transformers EfficientFormer "
                          "'efficientformer-hf' (shortest edge 256, bicubic, center crop 224), transformers "
                          "SwiftFormer 'swiftformer-hf' (bilinear squash to 224×224), timm 'timm' (shortest edge "
                          "235, bicubic, crop 224; also EfficientFormerV2's), original 'original' (shortest edge "
                          "256, bicubic, crop 224), anything else the family's published recipe. All normalise "
                          "with the ImageNet mean/std.\n"
                          "Input size: a 224 px EfficientFormer takes 193–224 px inputs (its attention biases fix "
                          "a 7×7 grid), EfficientFormerV2 209–224 px (a 14×14 stage-2 grid); SwiftFormer takes any "
                          "size. --size H W runs at another size (the preprocessing's crop or squash becomes H×W); "
                          "where that changes the attention grid, --bias-resize table|pairwise says how the biases "
                          "follow.\n"
                          "Labels: the config's id2label if it has real names, else the ImageNet-1k names for a "
                          "1000-class model, else 'class N'.\n"
                          "Speed: the model runs fused (each BatchNorm folded into its convolution; the same "
                          "logits within 1e-5). 'npformer trace' runs it unfused, to record every layer."),
        epilog="examples:\n"
               "  npformer predict two_cats.png chelsea.jpg --weights efficientformer-l1.safetensors --top 3\n"
               "  npformer predict cat.png --weights SwiftFormer_XS.pth --attention v1 --processor original\n"
               "  npformer predict cat.png --weights efficientformer-l1.safetensors --size 320 --bias-resize table\n\n"
               "prints, per image, a header line\n"
               "  IMAGE  (model class[, attention vN], dtype, preprocessing: RECIPE or CONFIG FILE)\n"
               "and then K lines:\n"
               "  rank. class-index label  probability%  logit value",
        formatter_class=fmt,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--top", "-k", type=positive_int, default=5, metavar="K", help="classes to show (default 5)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "convert", parents=[attention], help="convert a checkpoint to an npformer .safetensors weight file",
        description=_wrap(f"Convert a checkpoint to an npformer weight file (safetensors, timm key names, with the "
                          f"config, provenance, the preprocessing recipe of its source and, for SwiftFormer, the "
                          f"attention generation in its metadata). "
                          f"SRC: {weights_help}. Reading a .pth never runs code from it.\n\n"
                          f"An original SwiftFormer checkpoint does not say which attention it was trained with: "
                          f"pass --attention v1 or v2 (without it, convert stops with exit status 3)."),
        epilog="examples:\n"
               "  npformer convert efficientformer_l1_300d.pth efficientformer-l1.safetensors\n"
               "  npformer convert ./efficientformer-l1-300/ l1.safetensors --force\n"
               "  npformer convert ./tf-efficientformer-l1/ l1.safetensors   # config.json + tf_model.h5\n"
               "  npformer convert SwiftFormer_XS.pth swiftformer-xs.safetensors --attention v1\n"
               "  npformer convert swiftformer_xs.dist_in1k.pth swiftformer-xs-timm.safetensors   # timm: v2\n"
               "  npformer convert eformer_s0_450.pth efficientformerv2-s0.safetensors          # original V2",
        formatter_class=fmt,
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint to convert")
    p.add_argument("dst", metavar="DST", help="the .safetensors file to write")
    p.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "shapes", parents=[attention, sizing], help="tensor shape of every stage of a model, its MACs and parameters",
        description=_wrap("Run a model on zeros and print the shape of every stage-level output (stem, downsamples, "
                          "each block with its kind, stage outputs, norm, pooled, heads, logits) and its element "
                          "count. Uses seeded weights for --variant, or a real checkpoint's config with --weights.\n\n"
                          "Then the multiply-accumulates per image (convolutions and matrix products, counted as "
                          "torch's FlopCounterMode counts them; MACs = FLOPs / 2) and the parameters (BatchNorm "
                          "running statistics excluded) of the stem, each stage (with the downsample into it) and "
                          "the head (final norm and classifier heads), at --size: npformer.macs.count.\n\n"
                          "Variants: l1 l3 l7 are EfficientFormer (also efficientformer-l1 ...); SwiftFormer's are "
                          "swiftformer-xs, swiftformer-s, swiftformer-l1, swiftformer-l3; EfficientFormerV2's "
                          "efficientformerv2-s0, -s1, -s2, -l. As built, EfficientFormer takes 193–224 px "
                          "inputs, EfficientFormerV2 209–224 px, SwiftFormer any size; --size with --bias-resize "
                          "shows a variant at another size ('table': built for it; 'pairwise': the 224 biases "
                          "resized in the forward)."),
        epilog="examples:\n"
               "  npformer shapes --variant l7 --batch 4\n"
               "  npformer shapes --variant swiftformer-xs --size 256\n"
               "  npformer shapes --variant swiftformer-l3 --size 192 320\n"
               "  npformer shapes --variant efficientformerv2-l --all\n"
               "  npformer shapes --variant l1 --size 512 --bias-resize pairwise\n"
               "  npformer shapes --weights efficientformer-l1.safetensors --all",
        formatter_class=fmt,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--variant", choices=tuple(SHAPE_VARIANTS), default="l1", metavar="VARIANT",
                       help="published variant: " + " ".join(SHAPE_VARIANTS) + " (default l1 = EfficientFormer-L1)")
    which.add_argument("--weights", metavar="PATH", help=f"use this checkpoint instead: {weights_help}")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--all", action="store_true", help="print every traced sub-layer, not only stage-level outputs")
    p.set_defaults(func=cmd_shapes)

    p = sub.add_parser(
        "parity", help="max |npformer − reference| on seeded weights (needs torch, transformers, timm)",
        description=_wrap("Compare npformer with transformers 4.40.2 and timm on seeded weights and seeded pixels, "
                          "for each variant, model class and batch size, in float32 and float64, and print the "
                          "largest differences of the logits, hidden states and attentions. EfficientFormer: "
                          "transformers (all three classes) and timm. SwiftFormer: transformers (attention v1) and "
                          "timm (attention v2). EfficientFormerV2: timm (which stands for the original code too). "
                          "Needs the oracle extra: pip install 'npformer[oracle]'."),
        epilog="examples:\n"
               "  npformer parity --variants l1 --batch 1                 # EfficientFormer-L1 and SwiftFormer-L1\n"
               "  npformer parity --families swiftformer --references timm\n"
               "  npformer parity --families efficientformer --variants l1 l3 --batch 1 4\n"
               "  npformer parity --families efficientformerv2 --variants s0 --batch 1",
        formatter_class=fmt,
    )
    p.add_argument("--families", nargs="+", choices=tuple(FAMILIES), default=list(FAMILIES), metavar="FAMILY",
                   help=" and/or ".join(FAMILIES) + " (default: all)")
    p.add_argument("--variants", nargs="+", choices=parity_variants(), metavar="VARIANT",
                   help="variants within the chosen families: l1 l3 l7 (EfficientFormer), xs s l1 l3 "
                        "(SwiftFormer), s0 s1 s2 l (EfficientFormerV2); l1 and l3 select both EfficientFormer's "
                        "and SwiftFormer's unless --families narrows it (default: all)")
    p.add_argument("--references", nargs="+", choices=REFERENCES, default=list(REFERENCES), metavar="REFERENCE",
                   help="transformers and/or timm (default: both)")
    p.add_argument("--batch", nargs="+", type=positive_int, default=[1, 4], metavar="B",
                   help="batch sizes (default: 1 4)")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser(
        "trace", parents=[weights, attention, forward, sizing],
        help="write a golden-value fixture: the input and every activation of a forward pass",
        description=_wrap("Run a model on one input and write a trace fixture: a safetensors file holding the input "
                          "(`input`) and every traced activation under its name (stem.conv1, "
                          "stages.0.blocks.0.mlp.fc1, ..., logits) in the model's dtype, with the forward order, "
                          "model class, config, weights, dtype and npformer version in its metadata. A port to "
                          "another framework writes the same names and `npformer compare` finds the first layer "
                          "where it diverges.\n\n"
                          "INPUT: an image (preprocessed as `predict` does) or a .npy file of NCHW pixel values."),
        epilog="examples:\n"
               "  npformer trace tests/fixtures/digits/digit_3_705.png golden.safetensors\n"
               "  npformer trace pixels.npy golden64.safetensors --weights l1.safetensors --dtype float64\n"
               "  npformer compare port.safetensors golden.safetensors",
        formatter_class=fmt,
    )
    p.add_argument("input", metavar="IMAGE_OR_NPY", help="an image file, or a .npy file of [B, C, H, W] pixel values")
    p.add_argument("out", metavar="OUT", help="the .safetensors fixture to write (overwritten if it exists)")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser(
        "compare", help="compare two trace fixtures tensor by tensor; find the first beyond tolerance",
        description=_wrap("Compare trace fixture A (the port's) with B (the golden reference), tensors matched by "
                          "name, in B's forward order (its `names` metadata): shape, max |A−B|, max |A−B| / |B| and "
                          "whether |A−B| <= atol + rtol·|B| everywhere (np.allclose's test). A NaN or ±inf on either "
                          "side fails its tensor (its first position is printed); shape and dtype mismatches are "
                          "named; B's tensors that A lacks are listed. Prints the rows up to the first tensor beyond "
                          "tolerance (all rows with --all) and that tensor's name; when B has no `names` metadata no "
                          "first tensor is named, only those beyond tolerance. Exit status 0 when every common tensor "
                          "is within tolerance, 1 otherwise, 2 when A and B share no activation besides `input` or a "
                          "tolerance is not a finite number >= 0, 4 for an unreadable file or one that is not a "
                          "trace fixture."),
        epilog="examples:\n"
               "  npformer compare port.safetensors golden.safetensors\n"
               "  npformer compare a.safetensors b.safetensors --atol 1e-6 --rtol 1e-5 --all",
        formatter_class=fmt,
    )
    p.add_argument("a", metavar="A", help="a trace fixture (e.g. the port's)")
    p.add_argument("b", metavar="B", help="the reference trace fixture (e.g. npformer's)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.add_argument("--all", action="store_true", help="print every row, not only those up to the first failure")
    p.set_defaults(func=cmd_compare)

    evaluate.add_parser(sub, [weights, attention, forward], fmt, _wrap)
    return parser


def main(argv=None) -> int:
    """Run the CLI on `argv` (default sys.argv[1:]) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    try:
        return args.func(args)
    except NpformerError as err:
        print(f"npformer: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("npformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `npformer shapes --all | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
