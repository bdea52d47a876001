"""MLM domain pretraining of the message encoder on chat (`donorcast pretrain`).

Read top to bottom: config -> data -> model -> optimiser/schedule -> evaluation -> checkpoints -> loop.

- Base model: the packaged all-MiniLM-L6-v2 by default, or any local HF checkpoint dir. MiniLM ships
  without an MLM head, so `AutoModelForMaskedLM` builds one: the decoder is tied to the pretrained
  word embeddings and only the small head transform + bias start random. While that head is fresh
  the body's learning rate is held at zero for `head_warmup_steps` optimizer steps, so random-head
  gradients do not damage the pretrained encoder.
- Data: each stream's model-input messages in time order (member-only emotes stripped), joined with
  [SEP] and cut into `chunk_size`-token chunks ([CLS] ... [SEP]). Two held-out sets: a random share
  of the chunks ("concat"), and single messages removed before chunking ("messages", each its own
  sequence, dynamically padded — the seed padded these to 512). Held-out real data (RBTV 2017-09,
  HundredBeans wxc-indonesia) is excluded by default (`exclude_stream_prefixes`, `exclude_channels`).
- Masking: 15 % with 80/10/10 (transformers' DataCollatorForLanguageModeling), whole-word optional.
  Evaluation batches are masked once with a fixed seed, so "before" and "after" see the same masks.
- Perplexity = exp(total masked-token cross-entropy / masked tokens) — token-weighted, unlike the
  seed's mean of batch means. Logits are computed only at masked positions (a 30k-way projection
  of every token would cost as much as the encoder).
- Accelerate runs the same loop on CPU, one GPU (bf16 where supported) or several
  (`accelerate launch -m training.pretrain_mlm --config ...`). Checkpoints hold model, optimiser,
  scheduler and RNG states; `--resume` continues from the newest one, skipping the batches already seen.

Output dir: `encoder/` (base model + tokenizer, loadable by models.encoder.MessageEncoder),
`mlm/` (with head, to continue pretraining), `checkpoints/step-N/`, `results.json`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console

from training.held_out import RBTV_HELD_OUT_MONTH, WXC_INDONESIA_CHANNEL, is_held_out

if TYPE_CHECKING:
    import torch

console = Console(stderr=True)

# The held-out streams are training.held_out's rule; these name them for the exclusion report.
HELD_OUT_STREAM_PREFIXES = (f"rbtv-{RBTV_HELD_OUT_MONTH}",)
HELD_OUT_CHANNELS = (WXC_INDONESIA_CHANNEL,)


# ---------------------------------------------------------------------------- config

@dataclass
class PretrainConfig:
    out_dir: Path = Path(".donorcast/pretrain/run")
    base_model: Path | None = None  # None = packaged all-MiniLM-L6-v2
    # data
    database_url: str | None = None  # set by the CLI; tests pass texts to main() instead
    streams: list[str] = field(default_factory=list)  # explicit stream ids; empty = all not excluded
    stream_fraction: float = 1.0  # seeded random share of the eligible streams
    # extra exclusions beside the held-out rule, which always applies (training.held_out)
    exclude_stream_prefixes: list[str] = field(default_factory=list)
    exclude_channels: list[str] = field(default_factory=list)
    chunk_size: int = 128
    message_max_tokens: int = 64  # one message never takes more than this many tokens
    eval_chunk_fraction: float = 0.05
    eval_message_fraction: float = 0.01
    max_eval_chunks: int = 512
    max_eval_messages: int = 2000
    # masking
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    # optimisation
    batch_size: int = 16
    eval_batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-4
    head_lr: float = 1e-3  # the MLM head's lr when it starts random (a pretrained head uses lr)
    head_warmup_steps: int = 100  # body lr held at 0 this long, only when the head was initialised fresh
    weight_decay: float = 0.01
    warmup_steps: int = 50
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; overrides epochs
    max_grad_norm: float = 1.0
    seed: int = 0
    # running
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # CPU torch threads; None = 1, 0 = all cores
    eval_every: int = 0  # optimizer steps between evaluations (0 = only before/after)
    save_every: int = 200  # optimizer steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2
    resume: bool = False
    log_every: int = 10

    @classmethod
    def from_toml(cls, path: Path, **overrides: Any) -> PretrainConfig:
        """Preset file (training/configs/*.toml) with explicit overrides on top; unknown keys are errors."""
        from infra.errors import InputError

        values = tomllib.loads(Path(path).read_text(encoding="utf-8")) if path else {}
        return cls.from_dict({**values, **{k: v for k, v in overrides.items() if v is not None}}, InputError)

    @classmethod
    def from_dict(cls, values: dict[str, Any], error: type[Exception] = ValueError) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise error(f"unknown pretraining setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("out_dir", "base_model"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


@dataclass
class PretrainResults:
    before: dict[str, float]  # {"concat": perplexity, "messages": perplexity}
    after: dict[str, float]
    history: list[dict[str, Any]]  # periodic evaluations: {"step", "concat", "messages"}
    steps: int
    tokens: int  # non-pad tokens seen in training
    seconds: float
    tokens_per_second: float
    device: str
    mixed_precision: str
    num_processes: int
    streams: list[str]
    excluded_streams: list[str]
    n_train_chunks: int
    n_eval_chunks: int
    n_eval_messages: int
    head_was_fresh: bool
    base_model: str
    encoder_dir: str
    resumed_from: str | None
    finished_at: str


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class StreamText:
    """One stream's model-input messages in time order."""

    stream_id: str
    texts: list[str]
    channel_id: str | None = None


def is_excluded(stream: StreamText, config: PretrainConfig) -> bool:
    """The project's held-out rule (training.held_out), plus any extra exclusions the config names."""
    if is_held_out(stream_id=stream.stream_id, channel=stream.channel_id or ""):
        return True
    return stream.stream_id.startswith(tuple(config.exclude_stream_prefixes)) or (
        stream.channel_id is not None and stream.channel_id in config.exclude_channels
    )


def select_streams(streams: Sequence[StreamText], config: PretrainConfig) -> tuple[list[StreamText], list[str]]:
    """(streams to use, ids excluded as held out). Explicit ids never override the held-out rule."""
    excluded = [s.stream_id for s in streams if is_excluded(s, config)]
    eligible = [s for s in streams if not is_excluded(s, config)]
    if config.streams:
        wanted = set(config.streams)
        eligible = [s for s in eligible if s.stream_id in wanted]
    if config.stream_fraction < 1.0 and eligible:
        keep = max(1, round(len(eligible) * config.stream_fraction))
        chosen = set(random.Random(config.seed).sample(range(len(eligible)), keep))
        eligible = [s for i, s in enumerate(eligible) if i in chosen]
    return eligible, excluded


async def load_streams_from_db(database_url: str, config: PretrainConfig) -> tuple[list[StreamText], list[str]]:
    """(chosen streams with their model-input texts, held-out stream ids). Texts are time ordered,
    member-only emotes stripped; held-out streams are not even read."""
    from infra.postgres import create_pool
    from infra.repository import list_streams, stream_messages
    from infra.text import strip_member_signals

    pool = await create_pool(database_url)
    try:
        summaries = await list_streams(pool)
        shells = [StreamText(s.stream_id, [], s.channel_id) for s in summaries if s.n_messages]
        chosen, excluded = select_streams(shells, config)
        loaded = []
        for shell in chosen:
            messages = await stream_messages(pool, shell.stream_id)
            texts = (strip_member_signals(m.text) for m in messages if m.is_model_input and m.text)
            loaded.append(StreamText(shell.stream_id, [t for t in texts if t.strip()], shell.channel_id))
        return loaded, excluded
    finally:
        await pool.close()


@dataclass
class TokenChunks:
    """Training examples as one flat token array + [start, end) offsets: no per-token Python objects."""

    ids: np.ndarray  # int32, all chunks back to back
    special: np.ndarray  # bool, [CLS]/[SEP] (never masked)
    new_word: np.ndarray  # bool, token starts a word (whole-word masking)
    bounds: np.ndarray  # (n, 2) int64

    def __len__(self) -> int:
        return len(self.bounds)

    def example(self, i: int) -> dict[str, np.ndarray]:
        start, end = self.bounds[i]
        return {"input_ids": self.ids[start:end], "special": self.special[start:end], "new_word": self.new_word[start:end]}

    def subset(self, index: Sequence[int]) -> TokenChunks:
        return TokenChunks(self.ids, self.special, self.new_word, self.bounds[np.asarray(index, dtype=np.int64)])


def tokenize_messages(texts: Sequence[str], tokenizer: Any, max_tokens: int) -> tuple[list[list[int]], list[list[bool]]]:
    """Token ids without special tokens (each message at most max_tokens) and word-start flags."""
    ids: list[list[int]] = []
    starts: list[list[bool]] = []
    for begin in range(0, len(texts), 4096):
        encoded = tokenizer(
            list(texts[begin : begin + 4096]), add_special_tokens=False, truncation=True, max_length=max_tokens
        )
        for row, token_ids in enumerate(encoded["input_ids"]):
            words = encoded.word_ids(row) if encoded.is_fast else [None] * len(token_ids)
            ids.append(token_ids)
            starts.append([j == 0 or words[j] is None or words[j] != words[j - 1] for j in range(len(token_ids))])
    return ids, starts


def chunk_stream(ids: list[list[int]], starts: list[list[bool]], tokenizer: Any, chunk_size: int) -> Iterator[tuple[list[int], list[bool], list[bool]]]:
    """m1 [SEP] m2 [SEP] ... cut into bodies of chunk_size-2, each wrapped as [CLS] body [SEP].
    A tail shorter than a quarter chunk is dropped (too little context to be worth a step)."""
    body = chunk_size - 2
    flat: list[int] = []
    word: list[bool] = []
    for message, message_starts in zip(ids, starts, strict=True):
        if message:
            flat.extend(message)
            flat.append(tokenizer.sep_token_id)
            word.extend(message_starts)
            word.append(True)
    for start in range(0, len(flat), body):
        piece = flat[start : start + body]
        if len(piece) < max(8, body // 4):
            break
        chunk = [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id]
        special = [True] + [t == tokenizer.sep_token_id for t in piece] + [True]
        yield chunk, special, [True, *word[start : start + body], True]


@dataclass
class PretrainData:
    train: TokenChunks
    eval_chunks: TokenChunks
    eval_messages: TokenChunks


def _pack(rows: list[tuple[list[int], list[bool], list[bool]]]) -> TokenChunks:
    lengths = np.array([len(r[0]) for r in rows], dtype=np.int64)
    ends = np.cumsum(lengths)
    bounds = np.stack([ends - lengths, ends], axis=1) if len(rows) else np.zeros((0, 2), dtype=np.int64)
    def flat(k: int, dtype: Any) -> np.ndarray:
        return np.fromiter((x for r in rows for x in r[k]), dtype=dtype, count=int(lengths.sum()))
    return TokenChunks(flat(0, np.int32), flat(1, np.bool_), flat(2, np.bool_), bounds)


def build_data(streams: Sequence[StreamText], tokenizer: Any, config: PretrainConfig) -> PretrainData:
    """Held-out single messages first (removed from the pool), then chunks, then held-out chunks."""
    from infra.errors import InputError

    rng = np.random.default_rng(config.seed)
    chunks: list[tuple[list[int], list[bool], list[bool]]] = []
    messages: list[tuple[list[int], list[bool], list[bool]]] = []
    for stream in streams:
        if not stream.texts:
            continue
        ids, starts = tokenize_messages(stream.texts, tokenizer, config.message_max_tokens)
        n_eval = int(round(len(ids) * config.eval_message_fraction))
        held = set(rng.choice(len(ids), size=min(n_eval, len(ids)), replace=False).tolist()) if n_eval else set()
        for i in sorted(held):
            if ids[i]:
                messages.append((
                    [tokenizer.cls_token_id, *ids[i], tokenizer.sep_token_id],
                    [True] + [False] * len(ids[i]) + [True],
                    [True, *starts[i], True],
                ))
        keep = [i for i in range(len(ids)) if i not in held]
        chunks.extend(chunk_stream([ids[i] for i in keep], [starts[i] for i in keep], tokenizer, config.chunk_size))
    if len(chunks) < 2:
        raise InputError(
            f"only {len(chunks)} training chunk(s) of {config.chunk_size} tokens: ingest more chat "
            "(`donorcast ingest`), choose more streams, or lower chunk_size"
        )
    all_chunks = _pack(chunks)
    n_eval = min(config.max_eval_chunks, max(1, int(round(len(chunks) * config.eval_chunk_fraction))))
    order = rng.permutation(len(chunks))
    eval_messages = _pack(messages)
    if len(eval_messages) > config.max_eval_messages:
        eval_messages = eval_messages.subset(sorted(rng.choice(len(eval_messages), config.max_eval_messages, replace=False)))
    return PretrainData(
        train=all_chunks.subset(np.sort(order[n_eval:])),
        eval_chunks=all_chunks.subset(np.sort(order[:n_eval])),
        eval_messages=eval_messages,
    )


class ChunkDataset:
    """torch map-style dataset over TokenChunks (duck-typed: __len__ + __getitem__)."""

    def __init__(self, chunks: TokenChunks) -> None:
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.chunks.example(i)


class MaskingCollator:
    """Dynamic padding (`pad`, the DataLoader's collate_fn) + transformers' MLM masking (`mask`).

    Masking happens in the training loop, not in the DataLoader: loaders read one batch ahead, so
    masking there would draw random numbers before the checkpoint that belong after it, and a resumed
    run would mask differently. Whole-word boundaries travel as synthetic offsets: the library starts
    a new word where a token's start differs from the previous token's end."""

    def __init__(self, tokenizer: Any, mlm_probability: float, whole_word_mask: bool) -> None:
        import warnings

        from transformers import DataCollatorForLanguageModeling

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "random replacement not supported with whole-word masking"
            self.masker = DataCollatorForLanguageModeling(
                tokenizer, mlm_probability=mlm_probability, whole_word_mask=whole_word_mask
            )
        self.pad_id = tokenizer.pad_token_id
        self.whole_word_mask = whole_word_mask

    def __call__(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return self.mask(self.pad(examples))

    def pad(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        ids = np.full((len(examples), width), self.pad_id, dtype=np.int64)
        attention = np.zeros((len(examples), width), dtype=np.int64)
        special = np.ones((len(examples), width), dtype=np.int64)  # padding is never masked
        new_word = np.ones((len(examples), width), dtype=np.int64)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            ids[row, :n] = example["input_ids"]
            attention[row, :n] = 1
            special[row, :n] = example["special"]
            new_word[row, :n] = example["new_word"]
        padded = {"input_ids": ids, "attention_mask": attention, "special": special}
        if self.whole_word_mask:
            position = np.arange(width)[None, :] + np.cumsum(new_word, axis=1)
            padded["offsets"] = np.stack([position, position + 1], axis=-1)
        return {key: torch.from_numpy(value) for key, value in padded.items()}

    def mask(self, padded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Draws from torch's global RNG (restored on resume); works on CPU tensors."""
        input_ids, labels = self.masker.torch_mask_tokens(
            padded["input_ids"].clone(), special_tokens_mask=padded["special"], offset_mapping=padded.get("offsets")
        )
        return {"input_ids": input_ids, "attention_mask": padded["attention_mask"], "labels": labels}


def fixed_eval_batches(chunks: TokenChunks, collate: MaskingCollator, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Masked once with a fixed seed (the global RNG is left untouched), length-sorted to pad little."""
    import torch

    from models.encoder import length_sorted_batches

    lengths = [int(end - start) for start, end in chunks.bounds]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [collate([chunks.example(int(i)) for i in index]) for index in length_sorted_batches(lengths, batch_size)]


# ---------------------------------------------------------------------------- model

def build_model(base_model: Path | None) -> tuple[Any, Any, bool]:
    """(MLM model, tokenizer, head_was_fresh). The decoder shares the input embedding matrix."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from models.encoder import default_base_model_dir

    path = base_model or default_base_model_dir()
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # we report the fresh head ourselves, once, in plain words
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.tie_weights()
    fresh = [key for key in info["missing_keys"] if not key.endswith("decoder.weight")]
    return model, tokenizer, bool(fresh)


def head_module(model: Any) -> Any | None:
    """The MLM head of BERT-like (cls) and RoBERTa-like (lm_head) models; None = use the full forward."""
    for name in ("cls", "lm_head"):
        if hasattr(model, name):
            return getattr(model, name)
    return None


def masked_lm_loss(mlm: Any) -> Any:
    """Wrap the MLM model in one nn.Module whose forward returns (summed masked-token loss, masked-token
    count), so Accelerate's DDP and autocast wrappers see the whole computation."""
    import torch

    class MaskedLMLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlm = mlm

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            selected = labels != -100
            head = head_module(self.mlm)
            if head is None:
                logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits[selected]
            else:
                hidden = self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                logits = head(hidden[selected])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[selected], reduction="sum")
            return loss, selected.sum()

    return MaskedLMLoss()


# ---------------------------------------------------------------------------- optimiser and schedule

def make_optimizer(wrapped: Any, config: PretrainConfig, head_fresh: bool) -> Any:
    """AdamW with two groups: body (lr) and head (head_lr if the head is fresh, else lr);
    no decay on biases and LayerNorm."""
    import torch

    head = head_module(wrapped.mlm)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    tied = {id(wrapped.mlm.get_input_embeddings().weight)}
    groups: dict[tuple[str, bool], list[Any]] = {}
    for name, param in wrapped.named_parameters():
        part = "head" if id(param) in head_ids and id(param) not in tied else "body"
        decay = param.ndim >= 2 and "norm" not in name.lower()
        groups.setdefault((part, decay), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": params, "lr": config.head_lr if part == "head" and head_fresh else config.lr,
             "weight_decay": config.weight_decay if decay else 0.0, "part": part}
            for (part, decay), params in groups.items()
        ],
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def make_scheduler(optimizer: Any, config: PretrainConfig, total_steps: int, head_fresh: bool) -> Any:
    """Linear warm-up then linear decay; while a fresh head warms up, the body's factor is 0."""
    import torch

    hold = config.head_warmup_steps if head_fresh else 0

    def linear(step: int, start: int) -> float:
        step -= start
        if step < 0:
            return 0.0
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        return max(0.0, (total_steps - start - step) / max(1, total_steps - start - config.warmup_steps))

    factors = [
        (lambda step: linear(step, hold)) if group["part"] == "body" else (lambda step: linear(step, 0))
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


# ---------------------------------------------------------------------------- evaluation

def perplexity(wrapped: Any, batches: Sequence[dict[str, torch.Tensor]], device: Any) -> float:
    """exp(total masked-token loss / masked tokens) over fixed batches; nan for an empty set."""
    import torch

    total, count = 0.0, 0
    was_training = wrapped.training
    wrapped.eval()
    with torch.inference_mode():
        for batch in batches:
            loss, n = wrapped(**{k: v.to(device) for k, v in batch.items()})
            total += float(loss)
            count += int(n)
    wrapped.train(was_training)
    return math.exp(total / count) if count else float("nan")


def evaluate(wrapped: Any, eval_sets: dict[str, list[dict[str, torch.Tensor]]], device: Any) -> dict[str, float]:
    return {name: perplexity(wrapped, batches, device) for name, batches in eval_sets.items()}


# ---------------------------------------------------------------------------- checkpoints

STATE_FILE = "trainer_state.json"


def latest_checkpoint(out_dir: Path) -> Path | None:
    folder = out_dir / "checkpoints"
    found = sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()) if folder.is_dir() else []
    return found[-1] if found else None


def save_checkpoint(accelerator: Any, out_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """Accelerate state (model, optimiser, scheduler, RNG) + our counters; the state file is written
    last, so a checkpoint without it is incomplete and ignored."""
    import logging

    path = out_dir / "checkpoints" / f"step-{state['step']:07d}"
    tied_notice = logging.getLogger("accelerate.utils.other")  # "Removed shared tensor": the tied decoder
    level = tied_notice.level
    tied_notice.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(path))
    finally:
        tied_notice.setLevel(level)
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        for old in sorted((out_dir / "checkpoints").glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def save_encoder(mlm: Any, tokenizer: Any, out_dir: Path) -> Path:
    """encoder/ = base model + tokenizer (what MessageEncoder and ONNX export load); mlm/ = with head."""
    encoder_dir = out_dir / "encoder"
    mlm.base_model.save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    mlm.save_pretrained(out_dir / "mlm")
    tokenizer.save_pretrained(out_dir / "mlm")
    return encoder_dir


# ---------------------------------------------------------------------------- the job

def make_accelerator(config: PretrainConfig) -> Any:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from infra.errors import InputError

    if config.device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda (got {config.device!r})")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda, but torch sees no CUDA device (use --device auto or cpu)")
    use_cuda = config.device != "cpu" and torch.cuda.is_available()
    if not use_cuda:
        torch.set_num_threads((os.cpu_count() or 1) if config.threads == 0 else (config.threads or 1))
    return Accelerator(
        cpu=not use_cuda,
        mixed_precision="bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no",
        gradient_accumulation_steps=config.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )


def main(config: PretrainConfig, corpus: Sequence[StreamText] | None = None) -> PretrainResults:
    """Run (or resume) one pretraining job. `corpus` replaces the database (tests, notebooks)."""
    import torch
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader

    from infra.errors import InputError

    accelerator = make_accelerator(config)
    say = console.print if accelerator.is_main_process else (lambda *a, **k: None)
    set_seed(config.seed)
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    # --- data
    if corpus is None:
        if config.database_url is None:
            raise InputError("no chat to pretrain on: give a database_url (the CLI does) or a corpus")
        streams, excluded = asyncio.run(load_streams_from_db(config.database_url, config))
    else:
        streams, excluded = select_streams(corpus, config)
    mlm, tokenizer, head_fresh = build_model(config.base_model)
    if tokenizer.mask_token is None or tokenizer.sep_token_id is None or tokenizer.cls_token_id is None:
        raise InputError(f"{config.base_model}: tokenizer needs mask, [CLS]/<s> and [SEP]/</s> tokens for MLM")
    data = build_data(streams, tokenizer, config)
    collate = MaskingCollator(tokenizer, config.mlm_probability, config.whole_word_mask)
    eval_sets = {
        "concat": fixed_eval_batches(data.eval_chunks, collate, config.eval_batch_size, config.seed + 1),
        "messages": fixed_eval_batches(data.eval_messages, collate, config.eval_batch_size, config.seed + 2),
    }
    loader = DataLoader(
        ChunkDataset(data.train), batch_size=config.batch_size, shuffle=True, collate_fn=collate.pad,
        generator=torch.Generator().manual_seed(config.seed),  # iterators must not draw from the global RNG
    )
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    say(
        f"pretraining on {len(streams)} stream(s) ({len(excluded)} held out): {len(data.train)} chunks of "
        f"<= {config.chunk_size} tokens, eval {len(data.eval_chunks)} chunks + {len(data.eval_messages)} messages; "
        f"{total_steps} steps on {accelerator.device}"
        + (" [bf16]" if accelerator.mixed_precision == "bf16" else "")
        + ("; MLM head initialised fresh (body lr held for head warm-up)" if head_fresh else "")
    )

    # --- model, optimiser, schedule
    wrapped = masked_lm_loss(mlm)
    optimizer = make_optimizer(wrapped, config, head_fresh)
    scheduler = make_scheduler(optimizer, config, total_steps, head_fresh)
    wrapped, optimizer = accelerator.prepare(wrapped, optimizer)
    loader = accelerator.prepare_data_loader(loader, device_placement=False)  # masked on CPU, then moved
    set_seed(config.seed, device_specific=True)  # each process masks its own way
    accelerator.register_for_checkpointing(scheduler)

    # --- resume or evaluate the starting point
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "tokens": 0, "seconds": 0.0, "history": []}
    resumed_from = latest_checkpoint(out_dir) if config.resume else None
    if resumed_from is not None:
        accelerator.load_state(str(resumed_from))
        state = json.loads((resumed_from / STATE_FILE).read_text(encoding="utf-8"))
        say(f"resumed from {resumed_from} (step {state['step']})")
    else:
        state["before"] = evaluate(wrapped, eval_sets, accelerator.device)
        say(f"perplexity before: {_fmt(state['before'])}")

    # --- loop
    state = train_loop(accelerator, wrapped, optimizer, scheduler, loader, collate, eval_sets, state, total_steps, config)

    # --- finish
    after = evaluate(wrapped, eval_sets, accelerator.device)
    say(f"perplexity after {state['step']} steps: {_fmt(after)} (before: {_fmt(state['before'])})")
    accelerator.wait_for_everyone()
    encoder_dir = out_dir / "encoder"
    if accelerator.is_main_process:
        save_encoder(accelerator.unwrap_model(wrapped).mlm, tokenizer, out_dir)
    results = PretrainResults(
        before=state["before"], after=after, history=state["history"], steps=state["step"],
        tokens=state["tokens"], seconds=round(state["seconds"], 2),
        tokens_per_second=round(state["tokens"] / state["seconds"], 1) if state["seconds"] else 0.0,
        device=str(accelerator.device), mixed_precision=str(accelerator.mixed_precision),
        num_processes=accelerator.num_processes, streams=[s.stream_id for s in streams], excluded_streams=excluded,
        n_train_chunks=len(data.train), n_eval_chunks=len(data.eval_chunks), n_eval_messages=len(data.eval_messages),
        head_was_fresh=head_fresh, base_model=str(config.base_model or "all-MiniLM-L6-v2 (packaged)"),
        encoder_dir=str(encoder_dir), resumed_from=str(resumed_from) if resumed_from else None,
        finished_at=datetime.now(UTC).isoformat(),
    )
    if accelerator.is_main_process:
        (out_dir / "results.json").write_text(json.dumps(asdict(results), indent=2), encoding="utf-8")
        (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str), encoding="utf-8")
    accelerator.end_training()
    return results


def train_loop(
    accelerator: Any, wrapped: Any, optimizer: Any, scheduler: Any, loader: Any, collate: MaskingCollator,
    eval_sets: dict[str, list[dict[str, torch.Tensor]]], state: dict[str, Any], total_steps: int, config: PretrainConfig,
) -> dict[str, Any]:
    """Optimizer steps until total_steps; checkpoints every save_every and at the end."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    wrapped.train()
    progress = Progress(
        TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not accelerator.is_main_process,
    )
    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    with progress:
        task = progress.add_task("pretrain", total=total_steps, completed=state["step"], stats="")
        while state["step"] < total_steps:
            loader.set_epoch(state["epoch"])
            batches = accelerator.skip_first_batches(loader, state["batches_in_epoch"]) if state["batches_in_epoch"] else loader
            for padded in batches:
                started = time.perf_counter()
                batch = {k: v.to(accelerator.device) for k, v in collate.mask(padded).items()}
                with accelerator.accumulate(wrapped):
                    loss_sum, n_masked = wrapped(**batch)
                    loss = loss_sum / n_masked.clamp(min=1)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(wrapped.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state["batches_in_epoch"] += 1
                tokens = int(batch["attention_mask"].sum()) * accelerator.num_processes
                state["tokens"] += tokens
                window_tokens += tokens
                window_loss += float(loss.detach())
                window_batches += 1
                state["seconds"] += time.perf_counter() - started
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                state["step"] += 1
                if state["step"] % config.log_every == 0 or state["step"] == total_steps:
                    elapsed = time.perf_counter() - window_start
                    progress.update(task, stats=f"loss {window_loss / max(1, config.log_every * config.grad_accum):.3f} "
                                    f"{window_tokens / max(elapsed, 1e-9):,.0f} tok/s")
                    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
                progress.update(task, completed=state["step"])
                if config.eval_every and state["step"] % config.eval_every == 0:
                    state["history"].append({"step": state["step"], **evaluate(wrapped, eval_sets, accelerator.device)})
                if config.save_every and state["step"] % config.save_every == 0 and state["step"] < total_steps:
                    save_checkpoint(accelerator, config.out_dir, state, config.keep_checkpoints)
                if state["step"] >= total_steps:
                    break
            else:
                state["epoch"] += 1
                state["batches_in_epoch"] = 0
    save_checkpoint(accelerator, config.out_dir, state, config.keep_checkpoints)
    return state


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in values.items())


# ---------------------------------------------------------------------------- CLI

def pretrain_command(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="preset TOML (training/configs/*.toml); flags override it")] = None,
    base_model: Annotated[Path | None, typer.Option(help="HF checkpoint dir (default: settings.base_model or MiniLM)")] = None,
    out: Annotated[Path | None, typer.Option(help="output dir (default STATE_DIR/pretrain/<time>)")] = None,
    stream: Annotated[list[str] | None, typer.Option(help="stream id to use (repeatable); default all")] = None,
    stream_fraction: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="random share of the streams")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    epochs: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    grad_accum: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    chunk_size: Annotated[int | None, typer.Option(min=16, max=512)] = None,
    whole_word_mask: Annotated[bool | None, typer.Option("--whole-word-mask/--token-mask")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    threads: Annotated[int | None, typer.Option(min=0, help="CPU threads (0 = all cores; default settings.worker_threads)")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_every: Annotated[int | None, typer.Option(min=0)] = None,
    eval_every: Annotated[int | None, typer.Option(min=0)] = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = False,
) -> None:
    """MLM domain pretraining of the message encoder on the chat in PostgreSQL (perplexity before/after)."""
    from infra.cli import settings_from
    from infra.errors import InputError
    from infra.services import running_services

    settings = settings_from(ctx)
    if resume and out is None:
        raise InputError("--resume needs --out (the run folder to continue)")
    overrides = {
        "base_model": base_model or settings.base_model, "out_dir": out, "streams": stream or None,
        "stream_fraction": stream_fraction, "max_steps": max_steps, "epochs": epochs, "batch_size": batch_size,
        "grad_accum": grad_accum, "lr": lr, "chunk_size": chunk_size, "whole_word_mask": whole_word_mask,
        "device": device, "threads": threads if threads is not None else settings.worker_threads, "seed": seed,
        "save_every": save_every, "eval_every": eval_every, "resume": resume or None,
    }
    job = PretrainConfig.from_toml(config, **overrides) if config else PretrainConfig.from_dict(
        {k: v for k, v in overrides.items() if v is not None}, InputError
    )
    if out is None:
        job.out_dir = settings.state_dir / "pretrain" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with running_services(settings, kafka=False) as endpoints:
        job.database_url = endpoints.database_url
        results = main(job)
    console.print(f"[green]done[/green]: encoder in {results.encoder_dir}; results in {job.out_dir / 'results.json'}")


if __name__ == "__main__":
    # Several processes: `accelerate launch -m training.pretrain_mlm --config training/configs/gpu.toml`
    # (GPUs) or `torchrun --nproc_per_node N -m training.pretrain_mlm ...` (CPU). Start the services
    # once first (`donorcast up`) so the processes share them instead of racing to start them.
    import sys

    from infra.cli import main as cli_main

    sys.argv = [sys.argv[0], "pretrain", *sys.argv[1:]]
    cli_main()
