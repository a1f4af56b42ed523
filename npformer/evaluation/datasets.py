"""The DATA `npformer evaluate` reads: one ordered list of (image path, label) items.

Three kinds, told apart by what DATA is:

    class folders   DATA/<class>/**/<image>   a directory with one subfolder per class; images
                                              anywhere below it (hidden files and folders skipped)
    CSV / TSV       DATA = a .csv/.tsv/.txt   one `path,label` line per image (tab-separated for
                                              .tsv), an optional header `path,label`, paths
                                              relative to the file's folder; an empty label is
                                              an unlabelled image (predictions only)
    ImageNet val    DATA/ILSVRC2012_val_*.JPEG, the 50,000 validation images in one folder, with
                                              Kaggle's `LOC_val_solution.csv` (each image's
                                              synset: `ILSVRC2012_val_00000001,n01751748 ...`),
                                              found next to DATA or up to four folders above it,
                                              or passed as `ground_truth`

A class (a folder name, a CSV label) is matched to the model's outputs by the first rule that
matches every class of the dataset: the weights' class names (`labels.label_names`: the config's
id2label), then, for a 1000-class model, ImageNet synsets (`n01440764`, through the bundled
`npformer/data/imagenet-1k-synsets.txt`), then class indices (`0`, `1`, ...).

The devkit's `ILSVRC2012_validation_ground_truth.txt` is refused: its 1-based ILSVRC2012_IDs
follow the devkit's `meta.mat` order, not the class-index (sorted-synset) order, and npformer
does not bundle that mapping. Sort the images into synset folders (the devkit's valprep.sh
layout, which torchvision's and timm's ImageNet loaders read) or use `LOC_val_solution.csv`.

Every entry a class folder lists is accounted for: a name ending in an image extension is an
item, whatever the entry is (a regular file, a dangling or looping symbolic link, a FIFO, an
unreadable file: the run gives each that cannot be read an error record, counted in the report);
any other name, and a symbolic link to a folder (not followed), is counted as ignored; hidden
entries (and hidden folders, not entered) are counted as skipped; a class folder with no image
is named in the dataset's description; a folder that cannot be listed is refused. Files beside
the class folders (in DATA itself) are counted too.

Items are sorted by their recorded path (relative to the dataset root, "/"-separated), so a
dataset has one order on every machine and batch k is always images k·B … k·B + B − 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..labels import IMAGENET_NUM_CLASSES, imagenet_synsets
from .records import shown

# what a file must end in to be taken as an image (case-insensitive); everything else is ignored
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
KAGGLE_GROUND_TRUTH = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
IMAGENET_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG", re.IGNORECASE)
SYNSET = re.compile(r"n\d{8}")
CSV_HEADER = ("path", "label")


@dataclass(frozen=True)
class Item:
    """One image: its path as recorded (relative to the dataset root, or as the CSV wrote it)
    and its class index (None: unlabelled)."""

    path: str
    label: int | None


@dataclass(frozen=True)
class Dataset:
    """The images to evaluate, in order, and how their labels were read."""

    root: Path  # recorded paths are relative to it
    kind: str  # "class folders", "CSV", "TSV", "ImageNet val"
    items: tuple[Item, ...]
    labelling: str  # which rule matched the classes (see `match_classes`); "" when nothing is labelled
    classes: int  # distinct labels
    ignored: int = 0  # entries whose names do not end in an image extension, links to folders
    total: int = 0  # items before `limited`
    hidden: int = 0  # hidden files and folders skipped
    outside: int = 0  # files beside the class folders, in DATA itself
    empty_classes: tuple[str, ...] = ()  # class folders holding no image

    def file(self, item: Item) -> Path:
        return self.root / item.path

    def limited(self, limit: int | None) -> "Dataset":
        """The first `limit` items (all for None)."""
        return self if limit is None else replace(self, items=self.items[:limit])

    def fingerprint(self) -> str:
        """sha256 of the item list (paths and labels, not the images' bytes): what a resumed run
        must find unchanged."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.path}\t{item.label}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def describe(self) -> str:
        """"class folders, 360 images in 10 classes (folder names = the weights' class names)"."""
        text = f"{self.kind}, {len(self.items):,} images"
        if self.classes:
            text += f" in {self.classes:,} class{'es' if self.classes > 1 else ''} ({self.labelling})"
        if len(self.items) < self.total:
            text += f", the first {len(self.items):,} of {self.total:,}"
        if self.ignored:
            text += f"; {self.ignored:,} non-image files ignored"
        if self.outside:
            text += f"; {self.outside:,} files beside the class folders ignored"
        if self.hidden:
            text += f"; {self.hidden:,} hidden files or folders skipped"
        if self.empty_classes:
            names = ", ".join(shown(c) for c in self.empty_classes[:5]) + (" …" if len(self.empty_classes) > 5 else "")
            text += f"; {len(self.empty_classes):,} class folders hold no image ({names})"
        return text


def read_dataset(data, class_names: list[str], ground_truth=None) -> Dataset:
    """The dataset at `data` for a model whose outputs are called `class_names`.

    `ground_truth`: the ImageNet validation labels file (LOC_val_solution.csv) for a folder of
    ILSVRC2012_val_*.JPEG images; found by itself when it lies next to the folder or above it."""
    root = Path(data)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    if root.is_file():
        if ground_truth is not None:
            raise InputError(f"{root}: a ground-truth file goes with an ImageNet validation folder, not with a CSV")
        return _csv_dataset(root, class_names)
    listing = _listing(root)
    entries = [p for p in listing if not p.name.startswith(".")]
    subfolders = sorted(p for p in entries if p.is_dir())
    files = [p for p in entries if not p.is_dir()]  # files, dangling links, FIFOs ...
    if ground_truth is not None and subfolders:
        raise InputError(f"{root}: has class subfolders, which label the images already; a ground-truth file goes "
                         "with a flat folder of ILSVRC2012_val_*.JPEG images")
    if ground_truth is not None or (not subfolders and any(IMAGENET_VAL_NAME.fullmatch(p.name) for p in files)):
        return _imagenet_val_dataset(root, files, class_names, ground_truth)
    if not subfolders:
        raise InputError(f"{root}: no class subfolders (expected DATA/<class>/<image>, a CSV of path,label, or an "
                         "ImageNet validation folder of ILSVRC2012_val_*.JPEG images)")
    return _class_folder_dataset(root, subfolders, class_names, outside=len(files),
                                 hidden=len(listing) - len(entries))


# ---------------------------------------------------------------------------------------------
# matching classes to the model's outputs


def match_classes(classes, class_names: list[str], where: str) -> tuple[dict[str, int], str]:
    """({class as written: class index}, which rule matched) for the dataset's distinct classes.

    Rules, first to match every class wins: the weights' class names; ImageNet synsets (1000-class
    models); class indices 0 … num_labels − 1."""
    classes = sorted(set(classes))
    n = len(class_names)
    rules = [("the weights' class names", {name: i for i, name in reversed(list(enumerate(class_names)))})]
    if n == IMAGENET_NUM_CLASSES:
        rules.append(("ImageNet synsets", {s: i for i, s in enumerate(imagenet_synsets())}))
    rules.append(("class indices", {str(i): i for i in range(n)}))
    for rule, table in rules:
        if all(c in table for c in classes):
            return {c: table[c] for c in classes}, rule
    rule, table = max(rules, key=lambda r: sum(c in r[1] for c in classes))
    unmatched = [c for c in classes if c not in table]
    more = f" … (+{len(unmatched) - 5} more)" if len(unmatched) > 5 else ""
    shown = ", ".join(repr(c) for c in unmatched[:5]) + more
    names = ", ".join(repr(c) for c in class_names[:5]) + (" …" if n > 5 else "")
    imagenet = ", ImageNet synsets (n01440764 …)" if n == IMAGENET_NUM_CLASSES else ""
    raise InputError(f"{where}: {len(unmatched)} of {len(classes)} classes match no output of the model: {shown}; "
                     f"a class must be one of the weights' {n} class names ({names}){imagenet} or an index 0–{n - 1}")


# ---------------------------------------------------------------------------------------------
# the three kinds


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as err:
        raise InputError(f"{folder}: cannot list this folder ({err.strerror or err})") from None


def _walk_error(err: OSError):
    raise InputError(f"{err.filename}: cannot list this folder ({err.strerror or err}); its images could not be "
                     "counted")


def _class_folder_dataset(root: Path, subfolders: list[Path], class_names: list[str], outside: int = 0,
                          hidden: int = 0) -> Dataset:
    found, ignored, empty = [], 0, []  # found: (recorded path, class folder name)
    for folder in subfolders:
        images = 0
        for directory, folders, names in os.walk(folder, onerror=_walk_error):  # links to folders: not entered
            here = Path(directory)
            hidden += sum(n.startswith(".") for n in folders + names)
            links = [n for n in folders if not n.startswith(".") and (here / n).is_symlink()]
            ignored += len(links)
            folders[:] = sorted(n for n in folders if not n.startswith(".") and n not in links)
            for name in names:
                if name.startswith("."):
                    continue
                if _is_image(here / name):  # a file, a dangling link, a FIFO ...: the run says what it is
                    found.append(((here / name).relative_to(root).as_posix(), folder.name))
                    images += 1
                else:
                    ignored += 1
        if not images:
            empty.append(folder.name)
    if not found:
        raise InputError(f"{root}: its class subfolders hold no images (files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)})")
    table, rule = match_classes([c for _, c in found], class_names, f"{root} (class folders)")
    items = tuple(sorted((Item(path, table[c]) for path, c in found), key=lambda item: item.path))
    rule = "folder names = " + rule
    return Dataset(root, "class folders", items, rule, len(set(table.values())), ignored, len(items), hidden, outside,
                   tuple(empty))


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read as a UTF-8 text file ({err})") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in text and "," not in text) else ","
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    return [row for row in rows if any(row)]


def _csv_dataset(path: Path, class_names: list[str]) -> Dataset:
    if path.name == DEVKIT_GROUND_TRUTH or path.name == KAGGLE_GROUND_TRUTH:
        raise InputError(f"{path}: is ImageNet ground truth; pass the folder of validation images as DATA "
                         f"(the ground truth is found next to it, or give it with --ground-truth)")
    rows = _csv_rows(path)
    if rows and tuple(cell.lower() for cell in rows[0]) in (CSV_HEADER, CSV_HEADER[:1]):
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path}: lists no images (expected one `path,label` line per image)")
    for number, row in enumerate(rows, start=1):
        if len(row) > 2 or not row[0]:
            raise InputError(f"{path}: row {number} is {row!r}; expected `path,label` (or `path` alone)")
    labelled = [row[1] for row in rows if len(row) == 2 and row[1]]
    table, rule = match_classes(labelled, class_names, str(path)) if labelled else ({}, "")
    items = tuple(sorted((Item(row[0], table[row[1]] if len(row) == 2 and row[1] else None) for row in rows),
                         key=lambda item: item.path))
    duplicates = sorted({a.path for a, b in zip(items, items[1:]) if a.path == b.path})
    if duplicates:
        raise InputError(f"{path}: lists {len(duplicates)} image paths more than once, first {duplicates[0]!r}")
    kind = "TSV" if path.suffix.lower() == ".tsv" else "CSV"
    return Dataset(path.parent, kind, items, ("labels = " + rule) if rule else "", len(set(table.values())), 0,
                   len(items))


def find_ground_truth(folder: Path) -> Path | None:
    """LOC_val_solution.csv next to `folder` or up to four folders above it (Kaggle's layout:
    ILSVRC/Data/CLS-LOC/val/ under the folder that holds the csv)."""
    for parent in [folder, *folder.resolve().parents][:5]:
        if (parent / KAGGLE_GROUND_TRUTH).is_file():
            return parent / KAGGLE_GROUND_TRUTH
    return None


def read_kaggle_ground_truth(path: Path) -> dict[str, str]:
    """{image id: synset} from LOC_val_solution.csv (`ImageId,PredictionString`, the string's
    first word the synset of the image's first box; every box of an image has the same class)."""
    rows = _csv_rows(path)
    if not rows or [c.lower() for c in rows[0][:2]] != ["imageid", "predictionstring"]:
        raise InputError(f"{path}: not Kaggle's LOC_val_solution.csv (expected the header ImageId,PredictionString)")
    truth = {}
    for number, row in enumerate(rows[1:], start=2):
        words = row[1].split() if len(row) == 2 else []
        if not words or not SYNSET.fullmatch(words[0]):
            raise InputError(f"{path}: line {number} is {row!r}; expected `ILSVRC2012_val_00000001,n01751748 ...`")
        truth[row[0]] = words[0]
    return truth


def _imagenet_val_dataset(root: Path, files: list[Path], class_names: list[str], ground_truth) -> Dataset:
    truth_file = Path(ground_truth) if ground_truth is not None else find_ground_truth(root)
    if truth_file is None:
        raise InputError(f"{root}: holds ImageNet validation images but no {KAGGLE_GROUND_TRUTH} was found next to it "
                         f"or above it; pass --ground-truth, or sort the images into synset folders (valprep.sh)")
    if not truth_file.is_file():
        raise InputError(f"{truth_file}: no such ground-truth file")
    if truth_file.name == DEVKIT_GROUND_TRUTH or truth_file.suffix.lower() == ".txt":
        raise InputError(f"{truth_file}: the devkit's ground truth holds 1-based ILSVRC2012_IDs, which follow the "
                         f"devkit's meta.mat order, not the class-index (sorted synset) order; npformer does not "
                         f"bundle that mapping: use Kaggle's {KAGGLE_GROUND_TRUTH}, or sort the images into synset "
                         f"folders (valprep.sh) and pass that folder")
    if len(class_names) != IMAGENET_NUM_CLASSES:
        raise InputError(f"{root}: ImageNet labels need a 1000-class model, these weights have {len(class_names)} "
                         "classes")
    truth = read_kaggle_ground_truth(truth_file)
    images = sorted(p for p in files if _is_image(p))
    if not images:
        raise InputError(f"{root}: holds no images")
    missing = [p.name for p in images if p.stem not in truth]
    if missing:
        raise InputError(f"{truth_file}: has no label for {len(missing)} of the {len(images)} images in {root}, "
                         f"first {missing[0]}")
    table = {s: i for i, s in enumerate(imagenet_synsets())}
    unknown = sorted({truth[p.stem] for p in images} - set(table))
    if unknown:
        raise InputError(f"{truth_file}: {len(unknown)} synsets are not ImageNet-1k classes, first {unknown[0]}")
    items = tuple(Item(p.name, table[truth[p.stem]]) for p in images)
    return Dataset(root, "ImageNet val", items, f"labels = ImageNet synsets from {truth_file.name}",
                   len(set(table.values())), len(files) - len(images), len(items))
