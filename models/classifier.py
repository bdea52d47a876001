"""Donor classifier: a viewer's message sequence -> one logit (nanoGPT-style, read top to bottom).

    message embeddings (B, T, D)  --proj-->  (B, T, C)
      + Time2Vec(seconds since start, gap since previous message)
      + cheap per-message extras (length, emote ratio, '?', message number)
      + mean of learned vectors of the message's hashed words and trigrams (models.lexical; optional)
    prepend a learnable CLS token  ->  (B, 1+T, C)
    n_layers x pre-norm transformer block (multi-head self-attention with padding mask, MLP)
    final LayerNorm -> [CLS output (B, C), mean over messages (B, C)]
      [+ viewer-history MLP (B, C/2)] -> MLP head -> logit (B,)

The mean over message positions beside the CLS output is a short path from every message to the
head; with a few hundred positives it learns faster than attention alone (measured on validation).

Attention is written out (not nn.MultiheadAttention) so the ONNX export is a plain graph and the
attention weights are at hand. The CLS position is never masked, so no softmax row is empty.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.time_encoding import MessageTimeEncoding


@dataclass
class ClassifierConfig:
    embed_dim: int = 384  # encoder output size
    n_extras: int = 4  # per-message extras (0 = none)
    n_history: int = 0  # viewer-history features (0 = chat-only track)
    d_model: int = 96
    n_layers: int = 2
    n_heads: int = 4
    time_dim: int = 8
    mlp_ratio: int = 2
    dropout: float = 0.1
    input_dropout: float = 0.1  # on message embeddings: the encoder vectors are high-dimensional
    lexical_buckets: int = 0  # rows of the hashed word/trigram table (0 = no lexical input)
    lexical_dropout: float = 0.1  # share of a message's lexical ids dropped while training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassifierConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class SelfAttention(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        assert config.d_model % config.n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.head_dim = config.n_heads, config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, T)
        att = att.masked_fill(pad[:, None, None, :], float("-inf"))  # padded keys get no weight
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.out(y))


class MLP(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.d_model
        self.net = nn.Sequential(nn.Linear(config.d_model, hidden), nn.GELU(),
                                 nn.Linear(hidden, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer encoder layer; each instance has its own weights."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(config.d_model), SelfAttention(config)
        self.ln_2, self.mlp = nn.LayerNorm(config.d_model), MLP(config)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), pad)
        return x + self.mlp(self.ln_2(x))


class DonorClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        C = config.d_model
        self.embed_dropout = nn.Dropout(config.input_dropout)
        self.message_proj = nn.Linear(config.embed_dim, C)
        self.time = MessageTimeEncoding(C, config.time_dim)
        self.extras_proj = nn.Linear(config.n_extras, C) if config.n_extras else None
        self.lexical = nn.Embedding(config.lexical_buckets, C, padding_idx=0) if config.lexical_buckets else None
        if self.lexical is not None:
            nn.init.normal_(self.lexical.weight, std=0.02)
            with torch.no_grad():
                self.lexical.weight[0].zero_()
        self.cls = nn.Parameter(torch.randn(1, 1, C) * 0.02)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(C)
        self.history = (nn.Sequential(nn.Linear(config.n_history, C // 2), nn.GELU())
                        if config.n_history else None)
        head_in = 2 * C + (C // 2 if config.n_history else 0)
        self.head = nn.Sequential(nn.Linear(head_in, C), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(C, 1))

    def forward(
        self,
        embeddings: torch.Tensor,  # (B, T, D)
        seconds_since_start: torch.Tensor,  # (B, T)
        seconds_since_prev: torch.Tensor,  # (B, T)
        padding_mask: torch.Tensor,  # (B, T) bool, True = padding
        extras: torch.Tensor | None = None,  # (B, T, n_extras)
        history: torch.Tensor | None = None,  # (B, n_history)
        lexical_ids: torch.Tensor | None = None,  # (B, T, K) int64, 0 = padding
    ) -> torch.Tensor:
        B = embeddings.shape[0]
        x = self.message_proj(self.embed_dropout(embeddings))  # (B, T, C)
        x = x + self.time(seconds_since_start, seconds_since_prev)
        if self.extras_proj is not None:
            assert extras is not None, "this model was built with per-message extras"
            x = x + self.extras_proj(extras)
        if self.lexical is not None:
            assert lexical_ids is not None, "this model was built with hashed lexical ids"
            x = x + self._lexical_mean(lexical_ids)
        x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # (B, 1+T, C)
        pad = torch.cat([torch.zeros_like(padding_mask[:, :1]), padding_mask], dim=1)  # CLS is never padding
        for block in self.blocks:
            x = block(x, pad)
        x = self.ln_f(x)
        real = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        mean = (x[:, 1:] * real).sum(1) / real.sum(1).clamp(min=1.0)  # (B, C) over real messages
        features = torch.cat([x[:, 0], mean], dim=-1)  # (B, 2C): CLS output + message mean
        if self.history is not None:
            assert history is not None, "this model was built with viewer-history features"
            features = torch.cat([features, self.history(history)], dim=-1)  # (B, 2C + C/2)
        return self.head(features).squeeze(-1)  # (B,)

    def _lexical_mean(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T, K) ids -> (B, T, C) mean of their vectors; in training a random share is dropped,
        so no single nickname or phrase can carry a viewer's score alone."""
        assert self.lexical is not None
        if self.training and self.config.lexical_dropout > 0:
            ids = ids * (torch.rand(ids.shape, device=ids.device) >= self.config.lexical_dropout)
        present = (ids > 0).to(self.lexical.weight.dtype).sum(-1, keepdim=True).clamp(min=1.0)  # (B, T, 1)
        return self.lexical(ids).sum(2) / present  # row 0 is zero: padding adds nothing

    def input_names(self) -> list[str]:
        names = ["embeddings", "seconds_since_start", "seconds_since_prev", "padding_mask"]
        names += ["extras"] if self.config.n_extras else []
        names += ["history"] if self.config.n_history else []
        return names + (["lexical_ids"] if self.config.lexical_buckets else [])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------- explanation

@torch.no_grad()
def leave_one_out(model: DonorClassifier, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """For ONE sequence (batch 1, no padding): logit drop when each message is left out, shape (T,)."""
    model.eval()
    T = inputs["embeddings"].shape[1]
    base = model(**inputs)
    keep = ~torch.eye(T, dtype=torch.bool)  # row i keeps all but message i
    variants = {}
    for name, value in inputs.items():
        if name == "history":
            variants[name] = value.expand(T, -1)
        elif name == "padding_mask":
            variants[name] = torch.zeros(T, T - 1, dtype=torch.bool)
        else:
            variants[name] = torch.stack([value[0][keep[i]] for i in range(T)])
    return base - model(**variants)


# ---------------------------------------------------------------- persistence and export

def save_classifier(model: DonorClassifier, path: Path) -> None:
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)


def load_classifier(path: Path) -> DonorClassifier:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = DonorClassifier(ClassifierConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


class _ExportWrapper(nn.Module):
    """Positional inputs in `input_names()` order (the ONNX graph has only the inputs the model uses)."""

    def __init__(self, model: DonorClassifier) -> None:
        super().__init__()
        self.model, self.names = model, model.input_names()

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, args, strict=True)))


def example_inputs(config: ClassifierConfig, batch: int = 2, length: int = 3) -> dict[str, torch.Tensor]:
    inputs = {
        "embeddings": torch.randn(batch, length, config.embed_dim),
        "seconds_since_start": torch.rand(batch, length) * 3600,
        "seconds_since_prev": torch.rand(batch, length) * 60,
        "padding_mask": torch.zeros(batch, length, dtype=torch.bool),
    }
    inputs["padding_mask"][0, -1] = True
    if config.n_extras:
        inputs["extras"] = torch.rand(batch, length, config.n_extras)
    if config.n_history:
        inputs["history"] = torch.rand(batch, config.n_history)
    if config.lexical_buckets:
        inputs["lexical_ids"] = torch.randint(0, config.lexical_buckets, (batch, length, 4))
    return inputs


def export_classifier_onnx(model: DonorClassifier, path: Path) -> Path:
    """ONNX graph with dynamic batch and sequence axes; output "logit" (B,)."""
    model = model.eval()
    inputs = example_inputs(model.config)
    names = model.input_names()
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    if "history" in axes:
        axes["history"] = {0: "batch"}
    if "lexical_ids" in axes:
        axes["lexical_ids"] = {0: "batch", 1: "sequence", 2: "ids"}
    axes["logit"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _ExportWrapper(model).eval(), tuple(inputs[n] for n in names), str(path),
            input_names=names, output_names=["logit"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    return path
