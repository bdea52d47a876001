"""Fixtures for the benchmark smoke tests: a tiny random BERT, so every bench runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: real shapes and code paths, negligible compute."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from models.encoder import default_base_model_dir

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_base_model_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def strict_json(path: Path) -> dict:
    """The file parsed as strict JSON (NaN/Infinity rejected)."""
    import json

    def reject(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


MACHINE_KEYS = {"cpu_model", "logical_cores", "ram_gib", "python", "torch", "onnxruntime",
                "load_average_start", "load_average_end"}
