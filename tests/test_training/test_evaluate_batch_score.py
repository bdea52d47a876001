"""`donorcast score FILE... --model V --out scores.jsonl`: offline scoring of chat-downloader files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from infra.cli import build_app
from infra.events import ChatMessage
from producers.simulator import simulate
from producers.simulator import write_chat_downloader_json as write_simulated
from tests.test_training.test_fit_support import fitted, synthetic_stream


def write_chat_downloader_json(messages: list[ChatMessage], path: Path) -> None:
    """The JSON array `chat_downloader --output x.json` writes (current schema)."""
    items = []
    start = min(m.timestamp for m in messages)
    for m in sorted(messages, key=lambda m: m.timestamp):
        item = {
            "message_id": m.message_id, "message_type": "paid_message" if m.is_paid else "text_message",
            "timestamp": int(m.timestamp.timestamp() * 1_000_000),
            "time_in_seconds": (m.timestamp - start).total_seconds(),
            "author": {"id": m.author_id, "name": m.author_name,
                       **({"badges": [{"title": "Member (6 months)"}]} if m.is_member else {})},
            "message": m.text,
        }
        if m.is_paid:
            item["money"] = {"amount": m.amount, "currency": m.currency, "text": f"{m.amount} {m.currency}"}
        items.append(item)
    path.write_text(json.dumps(items))


def test_score_writes_one_line_per_viewer(tmp_path) -> None:
    settings, results, _ = fitted()
    version = results.tracks["history"].version
    streams = simulate(2, 77, viewers=80, minutes=60, donor_share=0.15)  # unseen seed
    paths = [write_simulated(stream, tmp_path / f"{stream.stream_id}.json") for stream in streams]
    out = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(
        build_app(), ["--state-dir", str(settings.state_dir), "score", *map(str, paths), "--model", version.version,
                      "--out", str(out), "--explain", "2"],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {(p.stem, m.viewer_id) for p, s in zip(paths, streams, strict=True) for m in s.messages if m.is_model_input}
    assert {(line["stream_id"], line["viewer_id"]) for line in lines} == expected
    by_key = {(line["stream_id"], line["viewer_id"]): line for line in lines}
    for path, stream in zip(paths, streams, strict=True):
        for viewer in {m.viewer_id for m in stream.messages if m.is_model_input}:
            mine = [m for m in stream.messages if m.viewer_id == viewer and m.is_model_input]
            line = by_key[(path.stem, viewer)]
            assert line["n_messages"] == len(mine)
            assert line["snapshot_time"] == max(m.timestamp for m in mine).isoformat()
            assert 0.0 <= line["score"] <= 1.0 and line["model_version"] == version.version
            assert 1 <= len(line["top_message_ids"]) <= 2
            assert set(line["top_message_ids"]) <= {m.message_id for m in mine}
    # The scores carry the signal: payers score higher than the rest on average.
    payers = {(p.stem, m.viewer_id) for p, s in zip(paths, streams, strict=True) for m in s.messages if m.is_paid}
    paid = [by_key[k]["score"] for k in payers if k in by_key]
    rest = [line["score"] for k, line in by_key.items() if k not in payers]
    assert sum(paid) / len(paid) > sum(rest) / len(rest)


def test_score_reports_a_missing_model(tmp_path) -> None:
    path = tmp_path / "s.json"
    write_chat_downloader_json(synthetic_stream(0, seed=3, n_viewers=3).messages, path)
    result = CliRunner().invoke(build_app(), ["--state-dir", str(tmp_path / "empty"), "score", str(path)])
    assert result.exit_code != 0
    assert "no promoted model" in str(result.exception) + result.output
