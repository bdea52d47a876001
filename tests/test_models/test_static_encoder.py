"""The fast encoder tier: a model2vec table distilled from the packaged MiniLM, trained, registered and
served through the same paths as the BERT tier (`fit --encoder-tier static`)."""

from __future__ import annotations

import numpy as np
from transformers import AutoTokenizer
from typer.testing import CliRunner

from models.encoder import default_base_model_dir
from models.scorer import DonorScorer
from models.static_encoder import StaticEncoder, spell_out_symbols
from stream_agents.score import embedding_space
from tests.test_training.test_fit_support import fitted, fitted_static, shared_cache
from training.build_dataset import DatasetConfig, build_dataset
from training.embeddings import chat_vocabulary, prepare_static_encoder
from training.train_classifier import training_texts

MIXED = ["hallo leute", "😂😂😂", "🦩", "KEKW", "wie geht's euch heute so, alles gut bei euch? " * 3, "", "❤️🔥 pog",
         "gg", "👍🏽", "this is a much longer message about the game that everyone is watching right now"]


def static_version():
    return fitted_static()[1].tracks["chat"].version


def test_symbols_are_spelled_out_by_name_without_their_glue() -> None:
    assert spell_out_symbols("plain ascii :)") == "plain ascii :)"
    assert spell_out_symbols("😂😂").split() == "face with tears of joy face with tears of joy".split()
    # variation selectors, zero-width joiners and skin tones glue emoji together; they carry no words
    assert spell_out_symbols("❤️").split() == ["heavy", "black", "heart"]
    assert spell_out_symbols("👍🏽").split() == ["thumbs", "up", "sign"]
    assert spell_out_symbols("grüße 🦩").split() == ["grüße", "flamingo"]


def test_the_chat_vocabulary_is_frequent_unknown_words_most_frequent_first() -> None:
    texts = ["kekw kekw lul", "KEKW lul pog", "pog the the the", "once", "kekw 123 x"]
    # counts 4, 2, 2 (ties by word); "the" is known, "once" rare, digits and one-letter tokens are no words
    assert chat_vocabulary(texts, known={"the"}, min_count=2) == ["kekw", "lul", "pog"]
    assert chat_vocabulary(texts, known=set(), min_count=2, limit=1) == ["kekw"]


def test_the_table_has_rows_for_the_training_chats_words_and_is_distilled_once(monkeypatch) -> None:
    version = static_version()
    streams = fitted_static()[2]
    dataset = build_dataset(streams, DatasetConfig(**version.manifest["dataset_config"]))
    known = set(AutoTokenizer.from_pretrained(default_base_model_dir()).get_vocab())
    words = chat_vocabulary((spell_out_symbols(t) for t in training_texts(dataset)), known, limit=20)
    assert words, "the simulated chat has no frequent word outside MiniLM's vocabulary"
    served = StaticEncoder.load(version.file("static_encoder")).model.tokenizer.get_vocab()
    assert set(words) <= set(served)  # whole rows, not the mean of their word pieces

    import model2vec.distill

    def no_second_distillation(*args, **kwargs):
        raise AssertionError("distilled again although the cache holds this checkpoint + vocabulary")

    monkeypatch.setattr(model2vec.distill, "distill", no_second_distillation)
    files = prepare_static_encoder(default_base_model_dir(), shared_cache(), training_texts(dataset))
    assert version.manifest["encoder_key"].startswith(files.key)


def test_a_static_version_is_registered_and_served_through_the_same_paths() -> None:
    version = static_version()
    assert version.encoder_tier == "static" and version.runtime_encoder == "static_encoder"
    assert version.has_file("static_encoder") and not version.has_file("encoder_onnx_int8")
    scorer = DonorScorer.load(version)
    assert isinstance(scorer.encoder, StaticEncoder)
    assert scorer.embedding_dim == 256  # model2vec's PCA
    # The worker keys stored vectors by embedding space: a static version never reuses BERT vectors.
    bert = fitted()[1].tracks["chat"].version
    assert embedding_space(version, scorer) != embedding_space(bert, DonorScorer.load(bert))


def test_static_vectors_do_not_depend_on_batch_mates_and_emoji_lines_are_not_zero() -> None:
    encoder = StaticEncoder.load(static_version().file("static_encoder"))
    together = encoder.embed(MIXED * 4)  # 40 texts of mixed lengths in one call
    alone = np.concatenate([encoder.embed([text]) for text in MIXED * 4])
    assert np.abs(together - alone).max() <= 1e-5
    norms = np.linalg.norm(encoder.embed(MIXED), axis=1)
    assert all(norms[i] > 0.5 for i, text in enumerate(MIXED) if text)  # emoji-only lines included
    assert norms[MIXED.index("")] == 0.0
    laughing, flamingo = encoder.embed(["😂", "🦩"])
    assert float(laughing @ flamingo) < 0.99  # emoji differ from each other, not one shared [UNK] row


def test_models_list_shows_each_versions_encoder_tier() -> None:
    from infra.cli import build_app

    settings, results, _ = fitted_static()
    result = CliRunner().invoke(build_app(), ["--state-dir", str(settings.state_dir), "models", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if results.tracks["chat"].version.version in line)
    assert "static" in row


def test_fit_refuses_an_unknown_encoder_tier(tmp_path) -> None:
    from infra.cli import build_app

    result = CliRunner().invoke(build_app(), ["--state-dir", str(tmp_path), "fit", "--simulate", "2",
                                              "--encoder-tier", "word2vec"])
    assert result.exit_code != 0
    assert "--encoder-tier must be one of bert, static" in (result.output + str(result.exception))
