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


def test_score_at_each_message_and_before_paid(tmp_path) -> None:
    """--at each-message: one row per model-input message, n_messages counting up; --at before-paid:
    payers scored after their last message before paying (never at or after the payment), everyone
    else after their last message; both agree with --at end where the snapshots coincide."""
    settings, results, _ = fitted()
    version = results.tracks["chat"].version
    (stream,) = simulate(1, 78, viewers=60, minutes=30, donor_share=0.15)
    path = write_simulated(stream, tmp_path / f"{stream.stream_id}.json")

    def run(at: str) -> list[dict]:
        out = tmp_path / f"{at}.jsonl"
        result = CliRunner().invoke(build_app(), ["--state-dir", str(settings.state_dir), "score", str(path),
                                                  "--model", version.version, "--out", str(out), "--at", at])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in out.read_text().splitlines()]

    inputs: dict[str, list[ChatMessage]] = {}
    for m in stream.messages:
        if m.is_model_input:
            inputs.setdefault(m.viewer_id, []).append(m)
    each = run("each-message")
    assert sorted((r["viewer_id"], r["n_messages"]) for r in each) == sorted(
        (viewer, n) for viewer, mine in inputs.items() for n in range(1, len(mine) + 1))
    for row in each:
        assert row["snapshot_time"] == inputs[row["viewer_id"]][row["n_messages"] - 1].timestamp.isoformat()

    before = {r["viewer_id"]: r for r in run("before-paid")}
    by_snapshot = {(r["viewer_id"], r["n_messages"]): r["score"] for r in each}
    for viewer, mine in inputs.items():
        paid = stream.first_donation_time(viewer)
        seen = [m for m in mine if paid is None or m.timestamp < paid]
        if not seen:
            assert viewer not in before  # paid before saying anything: nothing to score beforehand
            continue
        row = before[viewer]
        assert row["n_messages"] == len(seen) and row["snapshot_time"] == seen[-1].timestamp.isoformat()
        assert paid is None or seen[-1].timestamp < paid
        assert abs(row["score"] - by_snapshot[(viewer, len(seen))]) <= 1e-4

    end = {r["viewer_id"]: r for r in run("end")}
    assert {v: r["n_messages"] for v, r in end.items()} == {v: len(m) for v, m in inputs.items()}
    for viewer, row in end.items():
        assert abs(row["score"] - by_snapshot[(viewer, row["n_messages"])]) <= 1e-4


def test_score_rejects_an_unknown_mode(tmp_path) -> None:
    settings, results, _ = fitted()
    path = tmp_path / "s.json"
    write_chat_downloader_json(synthetic_stream(0, seed=3, n_viewers=3).messages, path)
    result = CliRunner().invoke(build_app(), ["--state-dir", str(settings.state_dir), "score", str(path),
                                              "--model", results.tracks["chat"].version.version, "--at", "later"])
    assert result.exit_code != 0
    assert "--at must be one of end, each-message, before-paid" in str(result.exception) + result.output
