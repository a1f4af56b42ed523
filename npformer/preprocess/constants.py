"""The constants the processors and recipes share: mean/std, Pillow's filter codes, the config file name."""

from __future__ import annotations

IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]

#: Pillow's resampling filter codes (`PIL.Image.Resampling`), as stored in HF configs.
PIL_RESAMPLE_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
