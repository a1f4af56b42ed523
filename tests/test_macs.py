"""MACs and parameters per stage and in total (npformer/macs.py) against torch's FlopCounterMode.

Golden tier (no torch): tests/fixtures/macs/flop_counter.json holds what FlopCounterMode counts on
the reference models (transformers and timm EfficientFormer, timm EfficientFormerV2, timm and
transformers SwiftFormer; make_golden.py there) for every variant at 224 and at other sizes:
npformer's count must equal it exactly, in total, per part (stem, stages.0-3, head), split into
convolutions and matrix products, and its parameters per part must equal the reference's. At 224
the counts are compared with the published GMACs at the precision they are printed with. Fused
models count the same; each layer counts its products once (formulas on small shapes); an `ast`
scan finds every matrix product in the forward code and requires it to be counted (or says why not).
Live tier (oracle): FlopCounterMode run again on configs the fixture does not hold, and on single
layers against npformer's per-layer counts.
"""

import ast
import importlib.util
import json
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import npformer
from npformer import cli, kernels, layers, macs
from npformer.checkpoints.weights import count_parameters
from npformer.errors import InputError
from npformer.models.classes import model_class
from npformer.models.registry import FAMILIES, family_of
from npformer.params import Params
from npformer.trace import no_trace
from tiers import tiered

FIXTURES = Path(__file__).parent / "fixtures" / "macs"
GOLDEN = json.loads((FIXTURES / "flop_counter.json").read_text())["cases"]
PACKAGE = Path(npformer.__file__).resolve().parent

_spec = importlib.util.spec_from_file_location("macs_make_golden", FIXTURES / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)  # torch-free at import: CASES, case_key, npformer_config

# GMACs at 224 as published, printed to the precision the publication prints them with
PUBLISHED = {
    ("efficientformer", "l1"): ("1.3", "EfficientFormer paper (NeurIPS 2022), Table 1"),
    ("efficientformer", "l3"): ("3.9", "EfficientFormer paper, Table 1"),
    ("efficientformer", "l7"): ("10.2", "EfficientFormer paper, Table 1"),
    ("efficientformerv2", "s0"): ("0.40", "snap-research/EfficientFormer README, V2 table ('MACs 0.40B')"),
    ("efficientformerv2", "s1"): ("0.65", "snap-research/EfficientFormer README"),
    ("efficientformerv2", "s2"): ("1.25", "snap-research/EfficientFormer README"),
    ("efficientformerv2", "l"): ("2.56", "snap-research/EfficientFormer README"),
    ("swiftformer", "xs"): ("0.6", "Amshaker/SwiftFormer README since 2023-07-26 (the first README said 0.4G)"),
    ("swiftformer", "s"): ("1.0", "Amshaker/SwiftFormer README"),
    ("swiftformer", "l1"): ("1.6", "Amshaker/SwiftFormer README"),
    ("swiftformer", "l3"): ("4.0", "Amshaker/SwiftFormer README"),
}
# where FlopCounterMode's count, printed the same way, is not the published figure (measured:
# L7 10.119 G, V2-L 2.5525 G); the publications' counters counted something more
NOT_AS_PUBLISHED = {("efficientformer", "l7"): "10.1", ("efficientformerv2", "l"): "2.55"}


def zero_model(cfg, num_heads=2, dtype=np.float32):
    """The model class for `num_heads` with all-zero weights: a count depends on shapes only."""
    cls = model_class(family_of(cfg).architecture(num_heads))
    weights = {k: np.zeros(shape, dtype) for k, shape in cls.weight_schema(cfg, num_heads).items()}
    return cls(cfg, weights, dtype=dtype)


@lru_cache(maxsize=None)
def case_model(family, variant, built):
    return zero_model(make_golden.npformer_config(family, variant, built))


@lru_cache(maxsize=None)
def case_count(family, variant, built, size) -> macs.MacCount:
    return macs.count(case_model(family, variant, built), size)


def case_id(case):
    return make_golden.case_key(*case)


# ---------------------------------------------------------------------------------------------
# the whole model against FlopCounterMode's counts


def test_the_fixture_covers_every_variant_at_224_and_two_other_sizes():
    sizes = {}
    for family, variant, built, size in make_golden.CASES:
        sizes.setdefault((family, variant), set()).add(size)
    assert set(sizes) == {(f, v) for f in FAMILIES for v in FAMILIES[f].variants}
    assert all((224, 224) in s and len(s) >= 3 for s in sizes.values()), sizes
    assert set(GOLDEN) == {case_id(c) for c in make_golden.CASES}


@pytest.mark.parametrize("case", tiered(make_golden.CASES, lambda case: case[:2]), ids=case_id)
def test_count_equals_flop_counter(case):
    ours = case_count(*case)
    assert GOLDEN[case_id(case)], "no reference counted this case"
    for reference, theirs in GOLDEN[case_id(case)].items():
        assert ours.macs == theirs["macs"], reference
        assert {p.name: p.macs for p in ours.parts} == theirs["macs_by_part"], reference
        by_op = dict(theirs["macs_by_op"])
        assert ours.by_op == {"conv": by_op.pop("aten.convolution"), "matmul": sum(by_op.values())}, reference
        assert set(by_op) <= {"aten.mm", "aten.addmm", "aten.bmm"}, by_op  # nothing else is counted
        assert {p.name: p.params for p in ours.parts} == theirs["params_by_part"], reference
        assert ours.params == theirs["params"]


@pytest.mark.parametrize("family,variant", tiered(PUBLISHED, lambda case: case, unpack=True), ids=lambda x: x)
def test_count_at_224_against_the_published_figure(family, variant):
    published, _source = PUBLISHED[family, variant]
    built = None if family == "swiftformer" else (224, 224)
    count = case_count(family, variant, built, (224, 224))
    decimals = len(published.split(".")[1])
    printed = f"{count.macs / 1e9:.{decimals}f}"
    assert printed == NOT_AS_PUBLISHED.get((family, variant), published), (count.macs, published)


@pytest.mark.parametrize("family,variant", tiered(PUBLISHED, lambda case: case, unpack=True), ids=lambda x: x)
def test_fusing_does_not_change_the_count(family, variant):
    built = None if family == "swiftformer" else (224, 224)
    model = case_model(family, variant, built)
    fused = macs.count(model.fuse(), 224)
    assert fused.fused and fused.parts == case_count(family, variant, built, (224, 224)).parts


def uncounted(fn):
    """`fn` run with no count active: what a layer that forgot to report its products would do."""
    def run(*args, **kwargs):
        token = macs._ACTIVE.set(None)
        try:
            return fn(*args, **kwargs)
        finally:
            macs._ACTIVE.reset(token)
    return run


def counted_twice(fn, macs_of):
    """`fn` that reports its product although its caller already did."""
    def run(*args, **kwargs):
        macs.count_macs(macs_of(*args), "conv")
        return fn(*args, **kwargs)
    return run


def depthwise_macs(x, weight, bias, stride, padding):  # B·C·OH·OW·KH·KW
    OH, OW = layers.conv_output_size(*x.shape[2:], *weight.shape[2:], stride, padding)
    return x.shape[0] * weight.shape[0] * OH * OW * weight.shape[2] * weight.shape[3]


MUTATIONS = {  # name: (case, module, attribute, replacement, MACs it moves the count by)
    "talking heads forgotten": (("efficientformerv2", "s0", (224, 224), (224, 224)), layers, "talking_heads",
                                uncounted(layers.talking_heads), -4 * 2 * 8 * 8 * 49 * 49),
    "attention products forgotten": (("efficientformer", "l1", (224, 224), (224, 224)), kernels, "count_matmul",
                                     lambda a, b: None, -(8 * 49 * 49 * (32 + 128))),
    "SwiftFormer's q·w_g forgotten": (("swiftformer", "xs", None, (224, 224)), kernels, "count_matmul",
                                      lambda a, b: None, -(3136 * 48 + 784 * 56 + 196 * 112 + 49 * 220)),
    "depthwise convolutions counted twice": (("efficientformerv2", "s0", (224, 224), (224, 224)), kernels,
                                             "depthwise_conv2d", counted_twice(kernels.depthwise_conv2d, depthwise_macs),
                                             None),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_comparison_catches(mutation, monkeypatch):
    """Each way to miss or double a product moves the count off FlopCounterMode's."""
    case, module, name, replacement, moved = MUTATIONS[mutation]
    if module == "swiftformer":
        from npformer.models.swiftformer import model as module
    golden = next(iter(GOLDEN[case_id(case)].values()))["macs"]
    monkeypatch.setattr(module, name, replacement)
    family, variant, built, size = case
    found = macs.count(case_model(family, variant, built), size).macs
    assert found != golden
    if moved is not None:  # exactly what the forgotten products are: 4 attention blocks' two h×h mixes, ...
        assert found - golden == moved, found - golden


def test_weights_and_dtype_do_not_change_the_count():
    cfg = npformer.SwiftFormerConfig.variant("xs")
    seeded = macs.count(npformer.SwiftFormerForImageClassification(cfg, dtype=np.float64), (256, 256))
    assert seeded.macs == GOLDEN["swiftformer-xs@256x256"]["timm"]["macs"]
    assert seeded.parts == case_count("swiftformer", "xs", None, (256, 256)).parts


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_model_class_counts_its_own_heads(family):
    """One head, or none (the backbone): the stages count the same; the head part is the heads'
    OUT·IN each, and the parameters are the class's own weights (BatchNorm statistics aside)."""
    fam = FAMILIES[family]
    cfg = fam.config.variant(fam.seeded_variant)
    full = macs.count(zero_model(cfg, 2), 224)
    for num_heads in fam.schema.ARCHITECTURES:
        model = zero_model(cfg, num_heads)
        count = macs.count(model, 224)
        assert count.model == fam.architecture(num_heads)
        assert count.parts[:-1] == full.parts[:-1]
        assert count["head"].macs == num_heads * cfg.num_labels * cfg.width
        assert count.params == count_parameters(model.weights)


def test_pairwise_bias_resizing_counts_no_products():
    """A 224 model whose biases follow the input (the "pairwise" strategy: the bias matrix is
    resampled in each forward, as the original backbones do with F.interpolate, which
    FlopCounterMode counts as nothing) counts what a model built for that size counts."""
    for config, key in [(npformer.EfficientFormerConfig.variant("l1", attention_bias_resize="pairwise"), "efficientformer-l1@256x256"),
                        (npformer.EfficientFormerV2Config.variant("s0", attention_bias_resize="pairwise"), "efficientformerv2-s0@256x256")]:
        count = macs.count(zero_model(config), 256)
        golden = next(iter(GOLDEN[key].values()))
        assert count.macs == golden["macs"] and {p.name: p.macs for p in count.parts} == golden["macs_by_part"]


# ---------------------------------------------------------------------------------------------
# the result, the API's errors, the command line


def test_result_table_and_dict():
    count = case_count("efficientformer", "l1", (224, 224), (224, 224))
    assert [p.name for p in count.parts] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
    assert count["stages.3"].macs == 418_229_504 and count["head"].params == 898_896
    assert count.macs == 1_291_284_736 and count.params == 12_289_928  # timm's param_count
    d = count.as_dict()
    assert json.loads(json.dumps(d))["total"] == {"macs": 1_291_284_736, "params": 12_289_928}
    text = str(count)
    assert text.splitlines()[0].startswith("MACs per image at 224×224")
    assert "  total     1,291,284,736  1.291  100.0%  12,289,928" in text
    assert "  stem         40,642,560  0.041    3.1%      11,232" in text
    with pytest.raises(KeyError, match="the parts are stem"):
        count["norm"]


def test_sizes_the_model_refuses_and_bad_sizes():
    model = case_model("efficientformer", "l1", (224, 224))
    with pytest.raises(InputError, match="193–224 px; got 256×256"):
        macs.count(model, 256)
    for bad in [(224,), (224, 0), "224", (224.0, 224), None, True]:
        with pytest.raises(InputError, match="image_size must be one side or"):
            macs.count(model, bad)
    assert macs.count(model, (200, 224)).macs == GOLDEN["efficientformer-l1@200x224/built-for-224x224"]["timm"]["macs"]


def test_shapes_prints_the_table(capsys):
    assert cli.main(["shapes", "--variant", "swiftformer-xs", "--size", "256", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[1]
    assert table.startswith("MACs per image at 256×256")
    total = next(line for line in table.splitlines() if line.startswith("  total")).split()
    assert int(total[1].replace(",", "")) == GOLDEN["swiftformer-xs@256x256"]["timm"]["macs"]  # per image at batch 2
    assert int(total[-1].replace(",", "")) == 3_475_360


# ---------------------------------------------------------------------------------------------
# each layer counts its products once


@pytest.mark.parametrize("B,IC,H,W,OC,groups,K,stride,pad", [
    (2, 6, 5, 7, 4, 1, 1, 1, 0),  # 1×1: one matrix product
    (1, 6, 5, 7, 4, 1, 1, 2, 0),  # strided 1×1: the general path
    (2, 6, 9, 8, 6, 6, 3, 1, 1),  # depthwise
    (1, 6, 9, 8, 6, 6, 3, 2, 1),  # strided depthwise
    (1, 6, 9, 8, 4, 2, 3, 1, 1),  # grouped
    (1, 3, 11, 10, 5, 1, 3, 2, 1),  # general (the stems and downsamples)
])
def test_conv2d_counts_every_path_once(B, IC, H, W, OC, groups, K, stride, pad):
    x = np.ones((B, IC, H, W), np.float32)
    w = np.ones((OC, IC // groups, K, K), np.float32)
    with macs.counting() as counter:
        out = layers.conv2d(x, w, np.zeros(OC, np.float32), stride=stride, padding=pad, groups=groups)
    OH, OW = out.shape[2:]
    assert counter.total == counter.by_op["conv"] == B * OC * OH * OW * (IC // groups) * K * K


def test_linear_and_attention_products():
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    with macs.counting() as counter:
        layers.linear(f(2, 4, 7), f(3, 7), f(3))
    assert counter.total == counter.by_op["matmul"] == 2 * 4 * 3 * 7

    B, N, C, h, dk, dv = 2, 6, 16, 2, 4, 8
    with macs.counting() as counter:
        layers.multi_head_attention(f(B, N, C), f(h * (2 * dk + dv), C), f(h * (2 * dk + dv)), f(C, h * dv), f(C),
                                    f(h, N, N), num_heads=h, key_dim=dk)
    assert counter.total == B * N * h * (2 * dk + dv) * C + B * h * N * N * (dk + dv) + B * N * C * h * dv

    B, h, N, M, dk, dv = 1, 3, 4, 5, 2, 6
    q, k, v, bias = f(B, h, N, dk), f(B, h, M, dk), f(B, h, M, dv), f(h, N, M)
    heads = [(f(h, h, 1, 1), f(h)), (f(h, h, 1, 1), f(h))]
    with macs.counting() as counter:
        layers.talking_heads_attention(q, k, v, bias, *heads)
    talking = B * h * N * M * h  # each a 1×1 convolution over the heads (timm's Conv2d)
    assert counter.by_op == {"conv": 2 * talking, "matmul": B * h * N * M * (dk + dv)}
    with macs.counting() as counter:
        layers.talking_heads_attention(q, k, v, bias)
    assert counter.by_op == {"conv": 0, "matmul": B * h * N * M * (dk + dv)}


def test_additive_attention_counts_its_four_linears_and_q_w_g():
    from npformer.models.swiftformer.model import additive_attention

    B, N, C = 2, 9, 8
    rng = np.random.default_rng(0)
    p = {f"a.{n}.{t}": rng.standard_normal((C, C) if t == "weight" else (C,)).astype(np.float32)
         for n in ("to_query", "to_key", "proj", "final") for t in ("weight", "bias")}
    p["a.w_g"] = rng.standard_normal((C, 1)).astype(np.float32)
    with macs.counting() as counter:
        additive_attention(rng.standard_normal((B, N, C)).astype(np.float32), Params(p),
                           npformer.SwiftFormerConfig.variant("xs"), no_trace, "a")
    assert counter.total == 4 * B * N * C * C + B * N * C


def test_nothing_counts_outside_a_count_and_counts_nest():
    x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((4, 4, 1, 1), np.float32)
    layers.conv2d(x, w)  # no counter: nothing to see, nothing kept
    with macs.counting() as outer:
        layers.conv2d(x, w)
        with macs.counting() as inner:
            layers.conv2d(x, w)
    one = 4 * 5 * 5 * 4
    assert (outer.total, inner.total) == (2 * one, one)
    with macs.counting() as fresh:
        pass
    assert fresh.total == 0


def test_a_count_sees_only_its_own_thread():
    x, w = np.ones((1, 4, 5, 5), np.float32), np.ones((4, 4, 1, 1), np.float32)
    with macs.counting() as counter:
        other = threading.Thread(target=layers.conv2d, args=(x, w))
        other.start()
        other.join()
        assert counter.total == 0
        layers.conv2d(x, w)
    assert counter.total == 4 * 5 * 5 * 4


# ---------------------------------------------------------------------------------------------
# every product in the forward code is counted


PRODUCT_FUNCTIONS = {"matmul", "dot", "einsum", "tensordot", "inner", "vdot", "outer"}
COUNTERS = {"count_macs", "count_matmul"}
# (file, function) with a product it does not count itself -> why
NOT_COUNTED_HERE = {
    ("resample.py", "interpolate"): "resampling (the pairwise bias resize): FlopCounterMode counts torch's "
                                  "F.interpolate as no FLOPs, so npformer does not count it either",
}


def is_seam(func: ast.Attribute) -> bool:
    """`kernels.matmul(...)`: npformer.kernels counts every product it computes (scanned there too)."""
    return isinstance(func.value, ast.Name) and func.value.id == "kernels"


def uncounted_products(source: str, filename: str) -> list[tuple[str, str]]:
    """(file, function) of every top-level function or method with a matrix product (`@`,
    np.matmul/dot/einsum/…) that calls neither counter; loop twins (`*_naive`) are exempt."""
    found = []
    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    functions += [m for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body if isinstance(m, ast.FunctionDef)]
    for fn in functions:
        if fn.name.endswith("_naive"):
            continue
        nodes = list(ast.walk(fn))
        products = [n for n in nodes if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult))
                    or (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in PRODUCT_FUNCTIONS
                        and not is_seam(n.func))]
        counts = [n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in COUNTERS]
        if products and not counts:
            found.append((filename, fn.name))
    return found


def test_every_product_in_the_forward_code_is_counted():
    files = [PACKAGE / name for name in ("kernels.py", "layers.py", "resample.py", "erf.py")]
    files += sorted((PACKAGE / "models").rglob("*.py"))
    found = []
    for path in files:
        found += uncounted_products(path.read_text(), path.relative_to(PACKAGE).as_posix())
    assert sorted(set(found) - set(NOT_COUNTED_HERE)) == [], "count it with npformer.macs, or say why not here"
    assert sorted(set(NOT_COUNTED_HERE) - set(found)) == [], "NOT_COUNTED_HERE lists what no longer needs it"


def test_the_scan_would_catch_an_uncounted_product():
    source = ("def mix(a, b):\n    return np.matmul(a, b)\n\n"
              "def mix_naive(a, b):\n    return a @ b\n\n"
              "def counted(a, b):\n    count_matmul(a, b)\n    return a @ b\n\n"
              "def through_the_seam(a, b):\n    return kernels.matmul(a, b)\n\n"
              "class M:\n    def __call__(self, x):\n        return x @ self.w\n")
    assert uncounted_products(source, "f.py") == [("f.py", "mix"), ("f.py", "__call__")]


# ---------------------------------------------------------------------------------------------
# live tier: FlopCounterMode itself


LIVE_CASES = [
    ("efficientformer", "l1", (288, 288), (288, 288)),  # transformers resolution=9
    ("efficientformerv2", "s1", (288, 288), (288, 288)),
    ("efficientformerv2", "s0", (224, 320), (224, 320)),  # also in the fixture: is it stale?
    ("swiftformer", "s", None, (250, 190)),
]


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from npformer.tools.oracle import import_timm

    try:
        import_timm()  # not importorskip: timm needs oracle.import_timm's torchvision workaround here
    except ImportError as err:
        pytest.skip(f"could not import 'timm': {err}")
    torch.set_num_threads(1)
    return torch


@pytest.mark.oracle
@pytest.mark.parametrize("case", LIVE_CASES, ids=case_id)
def test_count_equals_flop_counter_live(case, torch):
    family, variant, built, size = case
    cfg = make_golden.npformer_config(family, variant, built)
    ours = macs.count(zero_model(cfg), size)
    references = make_golden.references(family, variant, built, cfg)
    assert references
    for reference, (model, parts) in references.items():
        theirs = make_golden.flop_counts(model, size, parts)
        assert ours.macs == theirs["macs"], reference
        assert {p.name: p.macs for p in ours.parts} == theirs["macs_by_part"], reference
        assert {p.name: p.params for p in ours.parts} == theirs["params_by_part"], reference
        if case_id(case) in GOLDEN:
            assert GOLDEN[case_id(case)][reference]["macs"] == theirs["macs"], "fixture is stale: regenerate it"


@pytest.mark.oracle
def test_layer_counts_equal_flop_counter_live(torch):
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    def torch_macs(fn, *args, **kwargs):
        with FlopCounterMode(display=False) as counter:
            fn(*(torch.from_numpy(a) for a in args), **kwargs)
        return counter.get_total_flops() // 2

    def our_macs(fn, *args, **kwargs):
        with macs.counting() as counter:
            fn(*args, **kwargs)
        return counter.total

    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    for B, IC, H, W, OC, groups, K, stride, pad in [(2, 6, 5, 7, 4, 1, 1, 1, 0), (1, 6, 9, 8, 6, 6, 3, 2, 1),
                                                   (1, 6, 9, 8, 4, 2, 3, 1, 1), (1, 3, 11, 10, 5, 1, 3, 2, 1)]:
        x, w, b = f(B, IC, H, W), f(OC, IC // groups, K, K), f(OC)
        kw = dict(stride=stride, padding=pad, groups=groups)
        assert our_macs(layers.conv2d, x, w, b, **kw) == torch_macs(F.conv2d, x, w, b, **kw)
    x, w, b = f(2, 4, 7), f(3, 7), f(3)
    assert our_macs(layers.linear, x, w, b) == torch_macs(F.linear, x, w, b)
    q, k = f(2, 3, 5, 4), f(2, 3, 4, 6)
    with macs.counting() as counter:
        macs.count_matmul(q, k)
    assert counter.total == torch_macs(torch.matmul, q, k)
