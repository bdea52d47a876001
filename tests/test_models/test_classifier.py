"""DonorClassifier: shapes, padding invariance, real stacked layers, ONNX parity, leave-one-out."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.classifier import (
    ClassifierConfig,
    DonorClassifier,
    example_inputs,
    export_classifier_onnx,
    leave_one_out,
    load_classifier,
    save_classifier,
)
from models.time_encoding import Time2Vec

torch.set_num_threads(1)


def _model(**overrides: int) -> DonorClassifier:
    torch.manual_seed(0)
    config = ClassifierConfig(embed_dim=16, d_model=32, n_heads=4, n_layers=2, **overrides)
    return DonorClassifier(config).eval()


def test_layers_are_independent_and_heads_real() -> None:
    model = _model()
    first, second = model.blocks[0], model.blocks[1]
    assert first is not second
    assert first.attn.qkv.weight.data_ptr() != second.attn.qkv.weight.data_ptr()
    assert first.attn.n_heads == 4
    assert isinstance(first.ln_1, torch.nn.LayerNorm)  # pre-norm: LayerNorm before attention


def test_padding_does_not_change_the_logit() -> None:
    model = _model(n_history=6, lexical_buckets=64)
    inputs = example_inputs(model.config, batch=1, length=4)
    inputs["padding_mask"][:] = False
    padded = {k: v.clone() for k, v in inputs.items()}
    for name in ("embeddings", "seconds_since_start", "seconds_since_prev", "extras", "lexical_ids"):
        value = padded[name]
        filler = torch.full_like(value[:, :3], 17 if name == "lexical_ids" else 123.0)
        padded[name] = torch.cat([value, filler], dim=1)
    padded["padding_mask"] = torch.cat([inputs["padding_mask"], torch.ones(1, 3, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(**inputs), model(**padded), atol=1e-5)


def test_time_encoding_changes_the_score() -> None:
    model = _model()
    inputs = example_inputs(model.config, batch=1, length=3)
    later = dict(inputs, seconds_since_start=inputs["seconds_since_start"] + 5000.0)
    with torch.no_grad():
        assert not torch.allclose(model(**inputs), model(**later))
    features = Time2Vec(n_clocks=2, dim=8)(torch.rand(2, 3, 2) * 100)
    assert features.shape == (2, 3, 16)


@pytest.mark.parametrize(("n_history", "lexical_buckets"), [(0, 0), (6, 0), (0, 64)])
def test_onnx_export_matches_pytorch(tmp_path, n_history: int, lexical_buckets: int) -> None:
    model = _model(n_history=n_history, lexical_buckets=lexical_buckets)
    path = export_classifier_onnx(model, tmp_path / "c.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == model.input_names()
    for batch, length in ((1, 1), (5, 9)):  # dynamic axes: other shapes than the export example
        inputs = example_inputs(model.config, batch=batch, length=length)
        with torch.no_grad():
            expected = model(**inputs).numpy()
        (got,) = session.run(["logit"], {k: v.numpy() for k, v in inputs.items()})
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_save_load_roundtrip(tmp_path) -> None:
    model = _model()
    save_classifier(model, tmp_path / "c.pt")
    again = load_classifier(tmp_path / "c.pt")
    inputs = example_inputs(model.config)
    with torch.no_grad():
        assert torch.allclose(model(**inputs), again(**inputs))


def test_leave_one_out_finds_the_message_that_matters() -> None:
    model = _model()
    inputs = example_inputs(model.config, batch=1, length=5)
    inputs["padding_mask"][:] = False
    deltas = leave_one_out(model, inputs)
    assert deltas.shape == (5,)
    # Check one delta by hand: drop message 2 and re-score.
    keep = [0, 1, 3, 4]
    reduced = {k: (v[:, keep] if k != "padding_mask" else v[:, keep]) for k, v in inputs.items()}
    with torch.no_grad():
        expected = model(**inputs) - model(**reduced)
    assert torch.allclose(deltas[2], expected[0], atol=1e-5)


def test_lexical_ids_are_read_as_a_bag_with_padding() -> None:
    """Hashed word/trigram ids: their order in a message does not matter, id 0 adds nothing, and a
    message whose ids change gets another score (the table is really read)."""
    model = _model(lexical_buckets=64)
    inputs = example_inputs(model.config, batch=1, length=3)
    inputs["lexical_ids"] = torch.tensor([[[5, 9, 0, 0], [7, 0, 0, 0], [11, 12, 13, 0]]])
    shuffled = dict(inputs, lexical_ids=inputs["lexical_ids"][:, :, [2, 0, 3, 1]])
    wider = dict(inputs, lexical_ids=torch.cat([inputs["lexical_ids"], torch.zeros(1, 3, 5, dtype=torch.long)], dim=2))
    other = dict(inputs, lexical_ids=torch.tensor([[[5, 9, 0, 0], [8, 0, 0, 0], [11, 12, 13, 0]]]))
    with torch.no_grad():
        base = model(**inputs)
        assert torch.allclose(base, model(**shuffled), atol=1e-6)
        assert torch.allclose(base, model(**wider), atol=1e-6)
        assert not torch.allclose(base, model(**other))
    assert model.lexical is not None and float(model.lexical.weight[0].detach().abs().sum()) == 0.0
