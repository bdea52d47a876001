"""A stream worker with a candidate fix applied in-process, to measure a fix before its owner adopts it.

    DONORCAST_BENCH_WORKER_VARIANT=embed-pieces-8 python -m bench.worker_variants worker -l warn

The pipeline benchmark starts this module instead of `python -m stream_agents` when given
`--worker-variant NAME`. Each variant is one small, named change; the result file records which
one ran, and the stock worker's figures stay the baseline. Nothing here is used in production.

- embed-pieces-8: measured 2.5x the stock worker (bench/results/pipeline-embed-pieces-8.json) and
  then adopted: `DonorScorer.embed` now runs every micro-batch sorted by length in pieces of 8
  (models.scorer.EMBED_PIECE_SIZE), so this variant equals the stock worker today.
- embed-pieces-4: pieces of 4, a candidate still to measure against the adopted 8.
- no-settle: no wait for the broker's acknowledgement of the table writes between a batch's three
  changelog writes (stream_agents.pipeline.acknowledged). Not a candidate fix (it gives up ordered
  changelog writes, which failover needs): it measures what those two waits per batch cost.
  Measured back to back, 40,000 messages, one worker: 155.1 msgs/s without the waits vs 154.9 with
  them (bench/results/pipeline-no-settle.json, pipeline-stock-40k.json), p99 at half capacity
  555 vs 565 ms: no cost above the noise, so the stock worker keeps them.
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


def skip_settle() -> None:
    import stream_agents.pipeline as pipeline

    async def acknowledged(rt: Any) -> None:
        return None

    pipeline.acknowledged = acknowledged  # process_batch looks the name up at call time


VARIANTS: dict[str, Callable[[], None]] = {
    "embed-pieces-8": embed_in_pieces(8),
    "embed-pieces-4": embed_in_pieces(4),
    "no-settle": skip_settle,
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
