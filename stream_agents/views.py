"""HTTP on the worker's web server (faust's aiohttp), JSON unless noted. Chat text in answers is data:
whoever renders it must render it as text.

    GET  /healthz                          ok | degraded | starting, with why
    GET  /metrics                          Prometheus text
    GET  /metrics/summary                  small JSON (what `donorcast status` shows)
    POST /score                            {"messages": [{"text", "timestamp", "offset_seconds"?, "message_id"?}],
                                            "history"?: {...}} -> probability, top messages, model version
    GET  /streams                          streams this worker holds viewers of, with live precision@k
    GET  /streams/{stream_id}/leaderboard  ?k=20: top viewers by probability
    GET  /streams/{stream_id}/outcomes     recent paid events with the rank the payer had just before
    GET  /streams/{stream_id}/sequences    viewer_id -> message ids held (oldest first)
    GET  /streams/{stream_id}/viewer       ?viewer_id=...&explain=1: one viewer's stored messages

With several workers each answers for the partitions it owns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import Request, Response, View
from pydantic import BaseModel, Field, ValidationError

from infra.events import MAX_TEXT_CHARS, describe_validation_error
from infra.repository import ViewerHistory
from models.scorer import seconds_since_start
from stream_agents.leaderboard import BoardEntry
from stream_agents.persist import PostgresSink
from stream_agents.pipeline import Runtime
from stream_agents.score import embed_texts, explain_many, model_input, top_message_ids
from stream_agents.sequences import ViewerSequence, append, split_viewer_key

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_K = 1000


class ScoreMessage(BaseModel):
    text: str = Field(max_length=MAX_TEXT_CHARS)
    timestamp: datetime
    offset_seconds: float | None = Field(None, ge=0)
    message_id: str | None = Field(None, max_length=300)


class HistoryInput(BaseModel):
    past_streams: int = Field(0, ge=0)
    past_messages: int = Field(0, ge=0)
    past_paid_events: int = Field(0, ge=0)
    past_paid_amount: float = Field(0.0, ge=0)
    was_member: bool = False


class ScoreRequest(BaseModel):
    messages: list[ScoreMessage] = Field(min_length=1, max_length=1024)
    history: HistoryInput | None = None


async def score_request(rt: Runtime, request: ScoreRequest) -> dict[str, Any]:
    """Score one viewer's posted messages with the agents' functions: embed, append, model input, score."""
    model = rt.models.current
    if model is None:
        raise LookupError("no promoted model yet")
    messages = sorted(request.messages, key=lambda m: m.timestamp)
    header = ViewerSequence(capacity=rt.settings.sequence_length, origin=messages[0].timestamp.timestamp())
    window: list = []
    vectors = await embed_texts(rt.models, model, [m.text for m in messages])
    for i, (message, vector) in enumerate(zip(messages, vectors, strict=True)):
        ts = message.timestamp.timestamp()
        append(header, window, message_id=message.message_id or f"m{i}", timestamp=ts,
               since_start=seconds_since_start(ts, message.offset_seconds, header.origin or ts),
               text=message.text, embedding=vector, offset=i, now=time.time())
    history = ViewerHistory(viewer_id="request", **request.history.model_dump()) if request.history else None
    sequence = model_input(model, header, window, history)
    (probability,) = await rt.models.call(model.scorer.score, [sequence])
    (indices,) = await rt.models.call(explain_many, model.scorer, [sequence])
    top_ids = top_message_ids(sequence.message_ids, indices, model.scorer.feature_config.max_messages)
    texts = {m.message_id: m.text for m in window}
    return {
        "probability": float(probability),
        "model_version": model.version,
        "n_messages": header.count,
        "top_message_ids": list(top_ids),
        "top_messages": [{"message_id": i, "text": texts[i]} for i in top_ids],
    }


def entry_json(entry: BoardEntry, rank: int | None) -> dict[str, Any]:
    return {"rank": rank, "viewer_id": entry.viewer_id, "viewer_name": entry.viewer_name,
            "probability": entry.probability, "n_messages": entry.n_messages, "paid_events": entry.paid_events,
            "first_paid_at": entry.first_paid_at, "rank_before_paid": entry.rank_before_paid,
            "last_time": entry.last_time, "model_version": entry.model_version}


def _int(request: Request, name: str, default: int) -> int:
    try:
        return max(1, min(MAX_K, int(request.query.get(name, default))))
    except ValueError:
        return default


def health(rt: Runtime, sink: PostgresSink | None) -> dict[str, Any]:
    problems = []
    if rt.models.current is None:
        problems.append(rt.models.last_error or "no promoted model yet")
    elif rt.models.last_error:
        problems.append(rt.models.last_error)
    if sink is not None and sink.degraded:
        problems.append("PostgreSQL writes failing; retrying (scores still go to Kafka)")
    status = "starting" if rt.models.current is None else "degraded" if problems else "ok"
    model = rt.models.current
    return {"status": status, "model_version": model.version if model else None,
            "model_tier": model.tier if model else None, "problems": problems}


def register_views(app: faust.App, rt: Runtime, sink: PostgresSink | None) -> None:
    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json(health(rt, sink))

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # As a header: aiohttp refuses parameters (version, charset) in its content_type argument.
            return self.bytes(rt.metrics.prometheus_text(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    @app.page("/metrics/summary")
    class Summary(View):
        async def get(self, request: Request) -> Response:
            summary = rt.metrics.summary()
            summary["health"] = health(rt, sink)
            summary["postgres_rows"] = dict(sink.written) if sink else None
            summary["streams"] = len(rt.boards.streams)
            return self.json(summary)

    @app.page("/score")
    class Score(View):
        async def post(self, request: Request) -> Response:
            try:
                body = ScoreRequest.model_validate_json(await request.read())
            except ValidationError as error:
                return self.json({"error": describe_validation_error(error)}, status=400)
            try:
                return self.json(await score_request(rt, body))
            except LookupError as error:
                return self.json({"error": str(error)}, status=503)

    @app.page("/streams")
    class Streams(View):
        async def get(self, request: Request) -> Response:
            k = _int(request, "k", 10)
            return self.json([
                {"stream_id": stream_id, "viewers": len(board), "clock": board.clock,
                 "payers": sum(1 for e in board.entries.values() if e.paid_events),
                 f"precision_at_{k}": board.precision_at(k), f"hit_rate_at_{k}": board.hit_rate_at(k)}
                for stream_id, board in rt.boards
            ])

    @app.page("/streams/{stream_id}/leaderboard")
    class Leaderboard(View):
        async def get(self, request: Request, stream_id: str) -> Response:
            board = rt.boards.streams.get(stream_id)
            top = board.top(_int(request, "k", 20)) if board else []
            return self.json([entry_json(e, i + 1) for i, e in enumerate(top)])

    @app.page("/streams/{stream_id}/outcomes")
    class Outcomes(View):
        async def get(self, request: Request, stream_id: str) -> Response:
            return self.json([o.to_json() for o in rt.outcomes.recent(stream_id)])

    @app.page("/streams/{stream_id}/sequences")
    class Sequences(View):
        async def get(self, request: Request, stream_id: str) -> Response:
            prefix = f"{stream_id}|"
            held = {}
            for key, header in rt.store.items(keep=lambda k: k.startswith(prefix) and rt.owns(k)):
                held[key[len(prefix):]] = {
                    "message_ids": [m.message_id for m in rt.store.window(key, header)],
                    "n_messages": header.count, "paid_events": header.paid_events,
                }
            return self.json(held)

    @app.page("/streams/{stream_id}/viewer")
    class Viewer(View):
        async def get(self, request: Request, stream_id: str) -> Response:
            key = f"{stream_id}|{request.query.get('viewer_id', '')}"
            header = rt.store.header(key)
            if header is None:
                return self.json({"error": "no such viewer in this worker's partitions"}, status=404)
            window = rt.store.window(key, header)
            answer: dict[str, Any] = {
                "viewer_id": key.partition("|")[2], "rank": rt.boards.rank(key), **header.__dict__,
                "messages": [{"message_id": m.message_id, "number": m.number, "text": m.text,
                              "time": datetime.fromtimestamp(m.timestamp, UTC).isoformat(),
                              "seconds_since_start": m.seconds_since_start} for m in window],
            }
            model = rt.models.current
            if request.query.get("explain") and model is not None and window:
                sequence = model_input(model, header, window, rt.histories.get(split_viewer_key(key)))
                (indices,) = await rt.models.call(explain_many, model.scorer, [sequence])
                answer["top_message_ids"] = list(top_message_ids(
                    sequence.message_ids, indices, model.scorer.feature_config.max_messages))
            return self.json(answer)
