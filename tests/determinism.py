"""One random state and one thread for every model and training test, whatever ran before it.

Each test starts from the same seeds (Python, numpy, torch), so a test's result does not depend on
which tests ran before it in the session, or on `-k`/`-x` selections. torch runs on one intra-op
thread: a multi-threaded reduction may add in a different order from run to run. ONNX Runtime
sessions in these tests are made with one intra-op thread where they are created (DonorScorer,
OnnxEncoder and the fit's parity check default to 1).
"""

from __future__ import annotations

import random

import numpy as np

SEED = 0


def reset_random_state(seed: int = SEED) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - legacy global state, for any library that still draws from it
    torch.manual_seed(seed)
    torch.set_num_threads(1)
