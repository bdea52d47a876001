"""Training benchmark: MLM pretraining tokens/s of our loop vs a Hugging Face Trainer default, and the
donor classifier's fit time per epoch.

    python -m bench.training [--mlm-steps 30] [--batch-size 16] [--threads 1]

MLM: both runs get the same chunks (`training.pretrain_mlm.build_data` on the same chat), the same
model (`build_model`: the base encoder with its MLM head), batch size, thread count and number of
optimizer steps. Ours is `training.pretrain_mlm.main` (Accelerate loop; logits only at masked
positions; its `tokens_per_second` counts non-pad training tokens over the step time). The
baseline is `transformers.Trainer` with default arguments except those (and no saving/logging):
`DataCollatorForLanguageModeling` with dynamic padding, full-vocabulary logits for every token.
Its tokens are counted by the collator and timed from step begin to step end (callbacks), which
leaves its collation (masking) out of its time while ours includes it: a bias in its favour.

Classifier: the demo model's dataset (simulated streams, `training.demo_model.demo_fit_config`),
embedded once with the int8 ONNX encoder (timed: texts/s), then `train_transformer` for a fixed
number of epochs (no early stop) with a per-epoch clock (train pass + validation scoring).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.machine import Recorder, timed

if TYPE_CHECKING:
    from infra.settings import Settings

BASELINE = "hf_trainer_default"


@dataclass
class TrainingBenchConfig:
    mlm_steps: int = 30
    batch_size: int = 16
    chunk_size: int = 128
    threads: int = 1
    mlm_messages: int = 20_000  # chat read for the MLM corpus
    classifier_streams: int = 8  # the demo model's count
    classifier_epochs: int = 4
    model_dir: Path | None = None  # None = settings.base_model or packaged MiniLM
    cache_dir: Path | None = None
    source: str = "auto"
    seed: int = 0
    skip_mlm: bool = False
    skip_classifier: bool = False


# ---------------------------------------------------------------- MLM


def mlm_corpus(config: TrainingBenchConfig) -> tuple[list[Any], str]:
    from bench.messages import pipeline_messages
    from producers.readers import strip_member_signals
    from training.pretrain_mlm import StreamText

    sample = pipeline_messages(config.mlm_messages, source=config.source, seed=config.seed)
    by_stream: dict[str, list[str]] = {}
    for m in sample.messages:
        if m.is_model_input and m.text:
            text = strip_member_signals(m.text)
            if text.strip():
                by_stream.setdefault(m.stream_id, []).append(text)
    return [StreamText(stream_id, texts) for stream_id, texts in by_stream.items()], sample.source


def pretrain_config(config: TrainingBenchConfig, model_dir: Path, out_dir: Path) -> Any:
    from training.pretrain_mlm import PretrainConfig

    return PretrainConfig(
        out_dir=out_dir, base_model=model_dir, chunk_size=config.chunk_size, batch_size=config.batch_size,
        max_steps=config.mlm_steps, warmup_steps=max(1, config.mlm_steps // 10), head_warmup_steps=0,
        eval_chunk_fraction=0.01, eval_message_fraction=0.002, max_eval_chunks=4, max_eval_messages=16,
        eval_every=0, save_every=0, keep_checkpoints=1, log_every=max(1, config.mlm_steps), device="cpu",
        threads=config.threads, seed=config.seed, exclude_stream_prefixes=[], exclude_channels=[],
    )


def run_ours(config: TrainingBenchConfig, model_dir: Path, corpus: list[Any], work: Path) -> dict[str, Any]:
    from training.pretrain_mlm import main

    with timed() as span:
        results = main(pretrain_config(config, model_dir, work / "ours"), corpus=corpus)
    return {
        "name": "ours (training.pretrain_mlm)",
        "steps": results.steps, "tokens": results.tokens, "step_seconds": results.seconds,
        "tokens_per_s": results.tokens_per_second,
        "whole_job_wall_s": round(span.wall, 1),
        "train_chunks": results.n_train_chunks,
        "perplexity_before_after": {"before": results.before, "after": results.after},
    }


def run_trainer(config: TrainingBenchConfig, model_dir: Path, corpus: list[Any], work: Path) -> dict[str, Any]:
    """transformers.Trainer with its defaults on the same chunks, model, batch size and steps."""
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from training.pretrain_mlm import build_data, build_model, select_streams

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    cfg = pretrain_config(config, model_dir, work / "trainer")
    model, tokenizer, _ = build_model(model_dir)
    streams, _ = select_streams(corpus, cfg)
    data = build_data(streams, tokenizer, cfg)

    class Chunks(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return len(data.train)

        def __getitem__(self, i: int) -> dict[str, list[int]]:
            return {"input_ids": data.train.example(i)["input_ids"].tolist()}

    class CountingCollator:
        """The default MLM collator; counts the non-pad tokens it hands to the model."""

        def __init__(self) -> None:
            self.inner = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)
            self.batches: list[int] = []  # tokens per batch, in the order the loader made them

        def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = self.inner(examples)
            self.batches.append(int(batch["attention_mask"].sum()))
            return batch

        def tokens(self, steps: int) -> int:
            # Accelerate's loader collates one batch ahead: only the first `steps` were trained on.
            return sum(self.batches[:steps])

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.wall = self.cpu = 0.0
            self._start = (0.0, 0.0)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.wall += time.perf_counter() - self._start[0]
            self.cpu += time.process_time() - self._start[1]

    collator, clock = CountingCollator(), StepClock()
    args = TrainingArguments(
        output_dir=str(work / "trainer"), per_device_train_batch_size=config.batch_size, max_steps=config.mlm_steps,
        learning_rate=cfg.lr, save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True,
        seed=config.seed, disable_tqdm=True,
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        trainer = Trainer(model=model, args=args, train_dataset=Chunks(), data_collator=collator, callbacks=[clock])
        with timed() as span:
            output = trainer.train()
    finally:
        hf_logging.set_verbosity(verbosity)
    tokens = collator.tokens(int(output.global_step))
    runtime = float(output.metrics.get("train_runtime", span.wall))
    return {
        "name": "Hugging Face Trainer (defaults)",
        "steps": int(output.global_step), "tokens": tokens, "step_seconds": round(clock.wall, 2),
        "tokens_per_s": round(tokens / clock.wall, 1) if clock.wall else None,
        "tokens_per_cpu_s": round(tokens / clock.cpu, 1) if clock.cpu else None,
        "train_runtime_s": round(runtime, 2),
        "tokens_per_s_train_runtime": round(tokens / runtime, 1) if runtime else None,
        "train_chunks": len(data.train),
    }


# ---------------------------------------------------------------- classifier


def run_classifier(config: TrainingBenchConfig, settings: Settings, model_dir: Path, cache_dir: Path) -> dict[str, Any]:
    import torch

    from training.build_dataset import build_dataset, streams_from_simulator
    from training.demo_model import DEMO_SEED, demo_fit_config
    from training.embeddings import load_embedder, prepare_encoder
    from training.features import build_features
    from training.train_classifier import train_transformer

    torch.set_num_threads(config.threads)
    fit = replace(demo_fit_config(settings, progress=False), max_epochs=config.classifier_epochs,
                  patience=config.classifier_epochs + 1, threads=config.threads)
    streams = streams_from_simulator(config.classifier_streams, DEMO_SEED)
    with timed() as dataset_span:
        dataset = build_dataset(streams, fit.dataset)
    splits = {name: [dataset.samples[i] for i in dataset.indices(name)] for name in ("train", "val", "test")}
    files = prepare_encoder(model_dir, cache_dir, fit.encoder_max_length)
    embed = load_embedder(files, runtime=fit.runtime_encoder, threads=config.threads, batch_size=fit.embed_batch_size)
    features_config = fit.dataset.feature_config(use_extras=fit.use_extras, use_history=False)
    every = [s for name in ("train", "val", "test") for s in splits[name]]
    with timed() as embed_span:
        features = build_features(dataset, every, features_config, embed, None)
    train, val = features.subset(splits["train"]), features.subset(splits["val"])
    marks: list[float] = []
    start = time.perf_counter()
    _, log = train_transformer(train, val, fit, log=lambda line: marks.append(time.perf_counter()))
    epochs = np.diff([start, *marks]).tolist()
    distinct = int(features.embeddings.shape[0])
    return {
        "name": "donor classifier (training.train_classifier.train_transformer)",
        "streams": config.classifier_streams, "train_samples": len(train), "val_samples": len(val),
        "model": {"d_model": fit.d_model, "n_layers": fit.n_layers, "n_heads": fit.n_heads,
                  "max_messages": fit.dataset.max_messages, "batch_size": fit.batch_size},
        "dataset_seconds": round(dataset_span.wall, 2),
        "distinct_texts_embedded": distinct, "embed_seconds": round(embed_span.wall, 2),
        "embed_texts_per_s": round(distinct / embed_span.wall, 1) if embed_span.wall else None,
        "epochs": len(epochs), "epoch_seconds": [round(e, 2) for e in epochs],
        "epoch_seconds_median": round(float(np.median(epochs)), 2) if epochs else None,
        "train_samples_per_s": round(len(train) / float(np.median(epochs)), 1) if epochs else None,
        "val_pr_auc": round(float(log["val_pr_auc"]), 4),
    }


# ---------------------------------------------------------------- the run


def run(config: TrainingBenchConfig, settings: Settings, out: Path | None = None) -> dict[str, Any]:
    from models.encoder import default_base_model_dir

    recorder = Recorder("training", {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()})
    recorder.data["baseline"] = BASELINE
    if config.mlm_steps < TrainingBenchConfig().mlm_steps:
        recorder.note(f"reduced size: {config.mlm_steps} MLM steps per loop (full run: {TrainingBenchConfig().mlm_steps})")
    model_dir = Path(config.model_dir or settings.base_model or default_base_model_dir())
    cache_dir = Path(config.cache_dir or settings.state_dir / "cache")
    recorder.data["model_dir"] = str(model_dir)
    work = Path(tempfile.mkdtemp(prefix="donorcast-bench-training-"))
    try:
        if not config.skip_mlm:
            corpus, source = mlm_corpus(config)
            recorder.data["data"] = {"mlm_corpus": source}
            ours = run_ours(config, model_dir, corpus, work)
            trainer = run_trainer(config, model_dir, corpus, work)
            ratio = round(ours["tokens_per_s"] / trainer["tokens_per_s"], 2) if trainer["tokens_per_s"] else None
            recorder.data["mlm"] = {"threads": config.threads, "batch_size": config.batch_size,
                                    "chunk_size": config.chunk_size, "ours": ours, BASELINE: trainer,
                                    "ours_vs_trainer_tokens_per_s": ratio}
            recorder.data["targets"] = [{"name": "MLM tokens/s: ours vs Trainer default", "target": ">= 1.0x",
                                         "value": ratio, "met": bool(ratio and ratio >= 1.0)}]
            recorder.analysis(
                f"MLM at batch {config.batch_size} x <= {config.chunk_size} tokens, {config.threads} thread(s): ours "
                f"{ours['tokens_per_s']} tokens/s vs Trainer {trainer['tokens_per_s']} ({ratio}x). Ours projects only the "
                "~15% masked positions onto the 30k-word vocabulary; the Trainer's model computes logits and "
                "cross-entropy for every token."
            )
        if not config.skip_classifier:
            recorder.data["classifier"] = run_classifier(config, settings, model_dir, cache_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return recorder.finish(out)


def main(argv: list[str] | None = None) -> None:
    from bench.cli import run_module

    run_module("training", argv or [])


if __name__ == "__main__":
    main(sys.argv[1:])
