"""MLM pretraining: data shaping, masking, held-out exclusion, the DB path, a real MiniLM run that
lowers held-out perplexity, and resume. Tiny BERT checkpoints keep most of it to seconds."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from infra.errors import InputError
from training.pretrain_mlm import (
    HELD_OUT_CHANNELS,
    MaskingCollator,
    PretrainConfig,
    StreamText,
    build_data,
    chunk_stream,
    is_excluded,
    load_streams_from_db,
    main,
    select_streams,
    tokenize_messages,
)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
WORDS = "hallo gg pog lol kekw stream heute spiel boss endlich nochmal danke chat leute guten abend".split()


def chat_corpus(n_streams: int = 3, n_messages: int = 300, seed: int = 0) -> list[StreamText]:
    rng = random.Random(seed)
    return [
        StreamText(f"s{i}", [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) for _ in range(n_messages)])
        for i in range(n_streams)
    ]


def tiny_checkpoint(folder: Path) -> Path:
    """A random 2-layer BERT with MiniLM's tokenizer and an MLM head: any-local-checkpoint path, fast."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from models.encoder import default_base_model_dir

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertForMaskedLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_base_model_dir()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tokenizer(tiny: Path):  # noqa: ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def small_config(out: Path, base: Path | None, **changes: object) -> PretrainConfig:
    values: dict[str, object] = dict(
        out_dir=out, base_model=base, batch_size=8, chunk_size=64, eval_message_fraction=0.05,
        eval_chunk_fraction=0.1, max_eval_chunks=8, max_eval_messages=24, warmup_steps=1, head_warmup_steps=2,
        save_every=0, threads=1, log_every=1, lr=1e-3, head_lr=3e-3,
    )
    values.update(changes)
    return PretrainConfig(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- data


def test_chunks_are_cls_body_sep_with_message_separators(tokenizer) -> None:  # noqa: ANN001
    ids, starts = tokenize_messages(["erste nachricht", "zweite", "dritte nachricht hier"] * 20, tokenizer, 64)
    chunks = list(chunk_stream(ids, starts, tokenizer, chunk_size=32))
    assert len(chunks) >= 3
    for chunk, special, new_word in chunks:
        assert len(chunk) <= 32 and len(chunk) == len(special) == len(new_word)
        assert chunk[0] == tokenizer.cls_token_id and chunk[-1] == tokenizer.sep_token_id
        assert [t == tokenizer.sep_token_id or t == tokenizer.cls_token_id for t in chunk] == special
    text = tokenizer.decode(chunks[0][0])
    assert text.startswith("[CLS] erste nachricht [SEP] zweite [SEP] dritte nachricht hier [SEP]")


def test_eval_messages_are_removed_from_training_chunks(tokenizer) -> None:  # noqa: ANN001
    streams = [StreamText("s0", [f"nachricht nummer {i}" for i in range(400)])]
    data = build_data(streams, tokenizer, small_config(Path("unused"), None, eval_message_fraction=0.05))
    held = {tokenizer.decode(data.eval_messages.example(i)["input_ids"], skip_special_tokens=True)
            for i in range(len(data.eval_messages))}
    assert len(held) == 20
    training_text = " | ".join(
        tokenizer.decode(data.train.example(i)["input_ids"]).replace("[SEP]", "|") for i in range(len(data.train))
    )
    pieces = {p.strip() for p in training_text.replace("[CLS]", "|").split("|")}
    assert not held & pieces
    assert set(data.train.bounds[:, 0]).isdisjoint(set(data.eval_chunks.bounds[:, 0]))


def test_held_out_streams_are_excluded_by_default_even_when_asked_for() -> None:
    corpus = [
        StreamText("rbtv-2017-08-31", ["a"]),
        StreamText("rbtv-2017-09-01", ["b"]),
        StreamText("videoid123", ["c"], channel_id=HELD_OUT_CHANNELS[0]),
        StreamText("videoid456", ["d"], channel_id="UCaMKaSneK--9QLtkDlj2dag"),
    ]
    config = PretrainConfig(streams=["rbtv-2017-09-01", "rbtv-2017-08-31"])
    chosen, excluded = select_streams(corpus, config)
    assert [s.stream_id for s in chosen] == ["rbtv-2017-08-31"]
    assert excluded == ["rbtv-2017-09-01", "videoid123"]
    chosen, _ = select_streams(corpus, PretrainConfig(stream_fraction=0.5))
    assert len(chosen) == 1


def test_token_masking_is_15_percent_with_80_10_10(tokenizer) -> None:  # noqa: ANN001
    ids, starts = tokenize_messages(["hallo leute wie geht es euch heute abend"] * 400, tokenizer, 64)
    examples = [
        {"input_ids": np.array([tokenizer.cls_token_id, *row, tokenizer.sep_token_id]),
         "special": np.array([True] + [False] * len(row) + [True]), "new_word": np.array([True, *s, True])}
        for row, s in zip(ids, starts, strict=True)
    ]
    torch.manual_seed(0)
    batch = MaskingCollator(tokenizer, 0.15, whole_word_mask=False)(examples)
    original = torch.from_numpy(np.stack([e["input_ids"] for e in examples]))
    selected = batch["labels"] != -100
    assert not selected[:, 0].any() and not selected[:, -1].any()  # [CLS]/[SEP] never masked
    assert 0.13 < selected[:, 1:-1].float().mean() < 0.17
    as_mask = (batch["input_ids"] == tokenizer.mask_token_id) & selected
    unchanged = (batch["input_ids"] == original) & selected
    assert 0.76 < as_mask.sum() / selected.sum() < 0.84
    assert 0.07 < unchanged.sum() / selected.sum() < 0.13
    assert torch.equal(batch["labels"][selected], original[selected])


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer) -> None:  # noqa: ANN001
    texts = ["unglaublicherweise funktioniert donaudampfschifffahrt"] * 200
    ids, starts = tokenize_messages(texts, tokenizer, 64)
    assert not all(starts[0])  # the words really are split into pieces
    examples = [
        {"input_ids": np.array([tokenizer.cls_token_id, *row, tokenizer.sep_token_id]),
         "special": np.array([True] + [False] * len(row) + [True]), "new_word": np.array([True, *s, True])}
        for row, s in zip(ids, starts, strict=True)
    ]
    torch.manual_seed(1)
    batch = MaskingCollator(tokenizer, 0.15, whole_word_mask=True)(examples)
    word_of = np.cumsum(examples[0]["new_word"])
    selected = (batch["labels"] != -100).numpy()
    assert selected.any()
    for row in selected:
        for word in set(word_of[1:-1]):
            pieces = row[word_of == word]
            assert pieces.all() or not pieces.any()


def test_presets_parse_and_unknown_keys_are_rejected(tmp_path: Path) -> None:
    presets = sorted(p for p in CONFIGS.glob("*.toml") if not p.name.startswith("donor-"))  # donor-*: fit recipes
    assert presets
    for preset in presets:
        config = PretrainConfig.from_toml(preset)
        # the held-out rule stays on whatever a preset says
        assert is_excluded(StreamText("rbtv-2017-09-01", ["x"]), config)
        assert is_excluded(StreamText("v1", ["x"], channel_id=HELD_OUT_CHANNELS[0]), config)
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(InputError, match="learning_rate"):
        PretrainConfig.from_toml(bad)


def test_too_little_text_is_a_clear_error(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(InputError, match="donorcast ingest"):
        main(small_config(tmp_path, tiny), [StreamText("s", ["hallo"])])


# ---------------------------------------------------------------- training


def test_minilm_few_steps_lower_heldout_perplexity(tmp_path: Path) -> None:
    """The default path: packaged MiniLM, fresh MLM head tied to its embeddings, body held briefly."""
    from models.encoder import MessageEncoder

    corpus = chat_corpus(n_streams=2, n_messages=160) + [StreamText("rbtv-2017-09-01", ["geheim"] * 200)]
    results = main(small_config(tmp_path, None, max_steps=4, eval_message_fraction=0.06), corpus)

    print(f"\nMiniLM 4 steps: perplexity before {results.before}, after {results.after}, "
          f"{results.tokens_per_second} tokens/s")
    assert results.head_was_fresh and results.steps == 4
    assert results.excluded_streams == ["rbtv-2017-09-01"] and "rbtv-2017-09-01" not in results.streams
    for name in ("concat", "messages"):
        assert results.after[name] < results.before[name] / 5, (name, results.before, results.after)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["before"] == results.before and saved["after"] == results.after
    assert saved["tokens_per_second"] > 0

    encoder = MessageEncoder.load(tmp_path / "encoder")
    assert encoder.dim == 384 and encoder.embed(["hallo chat"]).shape == (1, 384)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_resume_after_a_crash_reaches_the_same_weights(tmp_path: Path, tiny: Path) -> None:
    corpus = chat_corpus()
    straight = main(small_config(tmp_path / "a", tiny, max_steps=6, save_every=3), corpus)
    assert not straight.head_was_fresh  # the tiny checkpoint has its own head

    # Same run, "crashed" after the step-3 checkpoint: drop everything written later.
    crashed = tmp_path / "b"
    main(small_config(crashed, tiny, max_steps=6, save_every=3), corpus)
    for late in ("encoder", "mlm", "results.json"):
        path = crashed / late
        _ = path.unlink() if path.is_file() else __import__("shutil").rmtree(path)
    __import__("shutil").rmtree(crashed / "checkpoints" / "step-0000006")

    resumed = main(small_config(crashed, tiny, max_steps=6, save_every=3, resume=True), corpus)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("step-0000003")
    assert resumed.steps == 6 and resumed.before == straight.before
    a, b = _weights(tmp_path / "a" / "encoder"), _weights(crashed / "encoder")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    assert resumed.after == pytest.approx(straight.after, rel=1e-5)


def test_gradient_accumulation_and_whole_word_masking_run(tmp_path: Path, tiny: Path) -> None:
    results = main(small_config(tmp_path, tiny, max_steps=3, grad_accum=2, whole_word_mask=True), chat_corpus())
    assert results.steps == 3
    assert results.after["concat"] < results.before["concat"]


# ---------------------------------------------------------------- PostgreSQL path and CLI


async def _store_chat(database_url: str) -> None:
    from infra.events import ChatMessage, MessageKind
    from infra.postgres import create_pool
    from infra.repository import save_messages, upsert_stream

    start = datetime(2022, 3, 1, 20, 0, tzinfo=UTC)
    rng = random.Random(3)
    messages = []
    for stream in ("train-a", "train-b", "rbtv-2017-09-02", "wxc-video"):
        for i in range(150):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7)))
            kind = MessageKind.TEXT
            if i % 50 == 7:
                text, kind = "danke für den superchat bezahlt", MessageKind.PAID_MESSAGE
            if i % 50 == 9:
                text = "ich bin mitglied :_clubEmote: juhu"
            messages.append(ChatMessage(
                stream_id=stream, message_id=f"{stream}-{i}", timestamp=start + timedelta(seconds=150 - i),
                author_name=f"v{i % 9}", text=f"{i:03d} {text}", kind=kind,
                amount=5.0 if kind is MessageKind.PAID_MESSAGE else None,
                currency="EUR" if kind is MessageKind.PAID_MESSAGE else None,
            ))
    pool = await create_pool(database_url)
    try:
        await save_messages(pool, messages, source="test")
        await upsert_stream(pool, platform="youtube", stream_id="wxc-video", channel_id=HELD_OUT_CHANNELS[0])
    finally:
        await pool.close()


async def test_db_corpus_is_time_ordered_inputs_only_and_skips_held_out(database_url: str) -> None:
    await _store_chat(database_url)
    streams, excluded = await load_streams_from_db(database_url, PretrainConfig())
    loaded = {s.stream_id: s.texts for s in streams}
    assert sorted(loaded) == ["train-a", "train-b"]
    assert sorted(excluded) == ["rbtv-2017-09-02", "wxc-video"]
    fraction, _ = await load_streams_from_db(database_url, PretrainConfig(stream_fraction=0.5))
    assert len(fraction) == 1
    texts = loaded["train-a"]
    assert len(texts) == 147  # 3 paid events left out
    assert [int(t[:3]) for t in texts] == sorted((int(t[:3]) for t in texts), reverse=True)  # by time
    assert not any("superchat" in t for t in texts)
    assert any("mitglied" in t for t in texts) and not any(":_" in t for t in texts)


def test_pretrain_cli_reads_postgres_and_writes_an_encoder(
    database_url: str, tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Synchronous on purpose: the command runs its own event loop, as it does from a shell."""
    import asyncio

    from infra.cli import build_app

    asyncio.run(_store_chat(database_url))
    monkeypatch.setenv("DONORCAST_DATABASE_URL", database_url)
    preset = tmp_path / "p.toml"
    preset.write_text("chunk_size = 48\nbatch_size = 4\neval_message_fraction = 0.05\nhead_warmup_steps = 0\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(build_app(), [
        "--state-dir", str(tmp_path / "state"), "pretrain", "--config", str(preset), "--base-model", str(tiny),
        "--out", str(out), "--max-steps", "2", "--device", "cpu", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["streams"] == ["train-a", "train-b"] and saved["steps"] == 2
    assert sorted(saved["excluded_streams"]) == ["rbtv-2017-09-02", "wxc-video"]
    assert (out / "encoder" / "config.json").is_file() and (out / "encoder" / "tokenizer.json").is_file()
