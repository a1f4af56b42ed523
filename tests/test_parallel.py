"""npformer.parallel: blockwise elementwise work is bit-identical to doing it in one go."""

import numpy as np
import pytest

from npformer import parallel
from npformer.erf import _gelu_erf, _gelu_f32, gelu


@pytest.fixture
def threads():
    before = parallel.get_num_threads()
    yield parallel.set_num_threads
    parallel.set_num_threads(before)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(7,), (parallel.BLOCK + 3,), (2, 97, 31, 29), (3 * parallel.BLOCK - 1,)])
def test_map_blocks_is_bit_identical(threads, n_threads, shape):
    threads(n_threads)
    x = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    whole = _gelu_f32(x.reshape(-1)).reshape(shape)
    blocked = parallel.map_blocks(_gelu_f32, x)
    assert blocked.shape == shape and blocked.dtype == np.float32
    assert np.array_equal(blocked, whole)


def test_map_blocks_reads_non_contiguous_input(threads):
    threads(2)
    x = np.random.default_rng(1).normal(0, 3, (2, 64, 40, 40)).astype(np.float64)
    view = x.transpose(0, 2, 3, 1)  # not C-contiguous
    assert np.array_equal(parallel.map_blocks(_gelu_erf, view), _gelu_erf(np.ascontiguousarray(view)))


def test_gelu_float32_and_float64_use_their_own_kernels():
    x = np.random.default_rng(2).normal(0, 3, 5000)
    assert np.array_equal(gelu(x), _gelu_erf(x))  # float64: the fdlibm erf
    x32 = x.astype(np.float32)
    assert np.array_equal(gelu(x32), _gelu_f32(x32))  # float32: the Phi table
    assert gelu(x32).dtype == np.float32


def test_set_num_threads_rejects_zero(threads):
    with pytest.raises(ValueError, match="at least 1"):
        threads(0)
