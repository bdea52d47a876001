"""The message encoder on ONNX Runtime: same `dim` / `embed` contract as models.encoder.MessageEncoder.

The graphs written by training.export_onnx take (input_ids, attention_mask) and return mean-pooled
"embeddings" (B, H). A graph that returns token states (B, T, H) instead (e.g. one exported by
another tool) is pooled here in numpy, so either works.

A message's vector does not depend on what it is batched with: the int8 file quantises activations
with one scale per row (training.export_onnx.quantize_int8), so the worker's length-sorted pieces of
8, training's batches of 64 and a single message all give the same vector (to fp32 rounding, ~1e-7).

One intra-op thread and sequential execution by default: the stream workers scale by processes, and
the machine's cores are shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.encoder import length_sorted_batches


def session_options(threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


@dataclass
class OnnxEncoder:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    max_length: int
    dim: int
    onnx_path: Path

    @classmethod
    def load(cls, onnx_path: Path, tokenizer_dir: Path, *, threads: int = 1, max_length: int = 64) -> OnnxEncoder:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from infra.errors import ModelNotFound

        if not Path(onnx_path).is_file():
            raise ModelNotFound(f"no ONNX encoder at {onnx_path}; create it with `donorcast export`")
        session = ort.InferenceSession(
            str(onnx_path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        encoder = cls(session=session, tokenizer=tokenizer, max_length=max_length, dim=0, onnx_path=Path(onnx_path))
        declared = session.get_outputs()[0].shape[-1]
        encoder.dim = declared if isinstance(declared, int) else encoder._run(["x"]).shape[1]
        return encoder

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), dim) float32 mean-pooled embeddings, rows in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer([text or "" for text in texts], truncation=True, max_length=self.max_length)
        ids, masks = encoded["input_ids"], encoded["attention_mask"]
        for index in length_sorted_batches([len(row) for row in ids], batch_size):
            batch = self.tokenizer.pad(
                {"input_ids": [ids[i] for i in index], "attention_mask": [masks[i] for i in index]},
                return_tensors="np",
            )
            out[index] = self._forward(batch["input_ids"], batch["attention_mask"])
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return self._forward(batch["input_ids"], batch["attention_mask"])

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        feed = {item.name: feed[item.name] for item in self.session.get_inputs() if item.name in feed}
        output = self.session.run(None, feed)[0]
        if output.ndim == 3:  # token states: pool over the real tokens
            mask = attention_mask[..., None].astype(np.float32)
            output = (output * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return output.astype(np.float32, copy=False)
