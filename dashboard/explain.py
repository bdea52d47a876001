"""Explanations on demand: which of an opened viewer's messages moved their score.

The agents explain only the top of each leaderboard (leave-one-out costs T+1 classifier rows per viewer,
stream_agents/score.py: EXPLAIN_TOP_K). A viewer opened in the dashboard outside that top gets the same
explanation computed now, from the same stored window and the same functions, when this worker holds
the viewer; otherwise the answer says why there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Explanation:
    message_ids: tuple[str, ...]
    source: str | None  # "scorer" (stored with the score), "on demand" (computed now), None: none
    reason: str | None = None  # why there is none, or what was done

    def to_json(self) -> dict[str, Any]:
        return {"message_ids": list(self.message_ids), "source": self.source, "reason": self.reason}


async def explain_on_demand(runtime: Any, stream_id: str, viewer_id: str) -> Explanation:
    """Leave-one-out over the viewer's window as the worker holds it, or the reason it cannot be done."""
    if runtime is None:
        return Explanation((), None, "explanations are computed by the worker; this server runs no model")
    model = runtime.models.current
    if model is None:
        return Explanation((), None, "no promoted model yet, so nothing can be explained")
    from stream_agents.score import explain_many, model_input, top_message_ids
    from stream_agents.sequences import split_viewer_key

    key = f"{stream_id}|{viewer_id}"
    if not runtime.owns(key):
        return Explanation((), None, "another worker holds this viewer's partition; open this viewer on that "
                                     "worker's dashboard to compute the explanation")
    header = runtime.store.header(key)
    if header is None:
        return Explanation((), None, "the worker holds no messages of this viewer any more (expired, or "
                                     "scored by a worker that has since stopped)")
    window = runtime.store.window(key, header)
    if not window:
        return Explanation((), None, "the worker holds no messages of this viewer any more")
    sequence = model_input(model, header, window, runtime.histories.get(split_viewer_key(key)))
    (indices,) = await runtime.models.call(explain_many, model.scorer, [sequence])
    ids = top_message_ids(sequence.message_ids, indices, model.scorer.feature_config.max_messages)
    return Explanation(ids, "on demand", f"computed when opened (the live scorer explains only the top "
                                         f"{_explain_top_k()} of each stream)")


def _explain_top_k() -> int:
    from stream_agents.score import EXPLAIN_TOP_K

    return EXPLAIN_TOP_K
