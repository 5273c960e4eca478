"""The shared record helpers: `distinct` answers as numpy's own np.unique does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from netoproc.capture.records import distinct


@pytest.mark.parametrize("size", [0, 1, 2, 7, 1000])
def test_distinct_is_np_unique(size: int) -> None:
    values = np.random.default_rng(size).integers(-5, 40, size, dtype=np.int64)
    assert distinct(values).tolist() == np.unique(values).tolist()
    assert distinct(values).dtype == values.dtype


def test_distinct_leaves_numpy_ma_unloaded() -> None:
    # the point of it: np.unique's plain form imports numpy.ma (1.2 MiB resident)
    code = (
        "import sys, numpy as np\n"
        "from netoproc.capture.records import distinct\n"
        "distinct(np.array([3, 1, 3]))\n"
        "print('numpy.ma' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
