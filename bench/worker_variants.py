"""A stream worker with a candidate fix applied in-process, to measure a fix before its owner adopts it.

    DONORCAST_BENCH_WORKER_VARIANT=embed-pieces-8 python -m bench.worker_variants worker -l warn

The pipeline benchmark starts this module instead of `python -m stream_agents` when given
`--worker-variant NAME`. Each variant is one small, named change; the result file records which
one ran, and the stock worker's figures stay the baseline. Nothing here is used in production.

- embed-pieces-8: the worker hands its whole micro-batch (up to settings.embed_batch_size
  messages, in arrival order) to `DonorScorer.embed`, whose batch_size (64) makes it one padded
  forward pass: one long message pads every short one. The variant passes batch_size=8, so
  `OnnxEncoder.embed` sorts the micro-batch by length and runs it in pieces of similar length.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

VARIANT_ENV = "DONORCAST_BENCH_WORKER_VARIANT"


def embed_in_pieces(size: int) -> Callable[[], None]:
    def apply() -> None:
        from models.scorer import DonorScorer

        original = DonorScorer.embed

        def embed(self: Any, texts: Sequence[str], batch_size: int = size) -> Any:
            return original(self, texts, batch_size=min(batch_size, size))

        DonorScorer.embed = embed  # type: ignore[method-assign]

    return apply


VARIANTS: dict[str, Callable[[], None]] = {
    "embed-pieces-8": embed_in_pieces(8),
    "embed-pieces-4": embed_in_pieces(4),
}


def main() -> None:
    name = os.environ.get(VARIANT_ENV, "")
    if name not in VARIANTS:
        print(f"error: {VARIANT_ENV} must be one of {', '.join(VARIANTS)} (got {name!r})", file=sys.stderr)
        sys.exit(2)
    VARIANTS[name]()
    from stream_agents.__main__ import main as worker_main

    worker_main()


if __name__ == "__main__":
    main()
