"""Message embeddings for training and offline scoring: the encoder's exports and a disk cache.

    HF checkpoint -> fp32 + int8 ONNX exports (made once per checkpoint, keyed by a hash of its files)
                  or a static table distilled from it (model2vec, the fast tier)
    -> an embed function (the encoder file the live agents load) -> vectors, cached on disk by
       encoder key + text so a re-run or another track embeds nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EmbedFn = Callable[[Sequence[str]], np.ndarray]


# ---------------------------------------------------------------- encoder files

def encoder_fingerprint(encoder_dir: Path, max_length: int) -> str:
    """Hash of every file of a checkpoint dir (+ max_length): the key of exports and embedding caches."""
    digest = hashlib.sha256(f"max_length={max_length}".encode())
    for path in sorted(p for p in Path(encoder_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(encoder_dir)).encode())
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EncoderFiles:
    encoder_dir: Path  # HF checkpoint with tokenizer
    onnx: Path | None  # None for the static tier, which needs no ONNX export
    onnx_int8: Path | None
    key: str
    max_length: int
    static_dir: Path | None = None  # the distilled model2vec table (static tier only)


def prepare_encoder(encoder_dir: Path, cache_dir: Path, max_length: int = 64) -> EncoderFiles:
    """fp32 + int8 ONNX exports of a checkpoint, made once per checkpoint and kept in the cache."""
    from training.export_onnx import INT8_METHOD, export_encoder_onnx, quantize_int8

    # The quantisation method is part of the key: an export (and its cached vectors) made with an
    # older, batch-dependent int8 method must never be reused for this one.
    key = f"{encoder_fingerprint(encoder_dir, max_length)}-{INT8_METHOD}"
    folder = Path(cache_dir) / "onnx" / key
    fp32, int8 = folder / "encoder.onnx", folder / "encoder.int8.onnx"
    if not int8.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        try:
            export_encoder_onnx(encoder_dir, staging / fp32.name)
            quantize_int8(staging / fp32.name, staging / int8.name)
            if folder.exists():  # another job finished first
                shutil.rmtree(staging)
            else:
                os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return EncoderFiles(encoder_dir=Path(encoder_dir), onnx=fp32, onnx_int8=int8, key=key, max_length=max_length)


# Chat words worth a row of their own in the static table: frequent in the training chat, missing from
# the checkpoint's vocabulary (so otherwise the mean of their word pieces), and short enough to be words.
STATIC_EXTRA_WORDS = 5000
STATIC_MIN_COUNT = 3
_WORD = re.compile(r"[^\W\d_][\w'-]{1,30}", re.UNICODE)


def chat_vocabulary(texts: Iterable[str], known: set[str], *, limit: int = STATIC_EXTRA_WORDS,
                    min_count: int = STATIC_MIN_COUNT) -> list[str]:
    """The most frequent lower-case words of `texts` not in `known`, most frequent first (ties by word)."""
    counts = Counter(word for text in texts for word in _WORD.findall(text.lower()) if word not in known)
    frequent = sorted((word for word, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return frequent[:limit]


def prepare_static_encoder(encoder_dir: Path, cache_dir: Path, corpus: Iterable[str], max_length: int = 64,
                           *, extra_words: int = STATIC_EXTRA_WORDS) -> EncoderFiles:
    """A model2vec table distilled from the checkpoint, its vocabulary extended with the corpus's frequent
    words (pass training texts only); made once per checkpoint + vocabulary and kept in the cache."""
    from transformers import AutoTokenizer

    from models.static_encoder import spell_out_symbols

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    words = chat_vocabulary((spell_out_symbols(t) for t in corpus), set(tokenizer.get_vocab()), limit=extra_words)
    digest = hashlib.sha256("\n".join(words).encode()).hexdigest()[:12]
    key = f"{encoder_fingerprint(encoder_dir, max_length)}-static-{digest}"
    folder = Path(cache_dir) / "static" / key
    if not (folder / "model.safetensors").is_file():
        from model2vec.distill import distill

        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        try:
            distill(model_name=str(encoder_dir), vocabulary=words or None, device="cpu").save_pretrained(str(staging))
            if folder.exists():  # another job finished first
                shutil.rmtree(staging)
            else:
                os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return EncoderFiles(encoder_dir=Path(encoder_dir), onnx=None, onnx_int8=None, key=key, max_length=max_length,
                        static_dir=folder)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link (no extra disk) where the filesystem allows, else copy; folders recursively."""
    if source.is_dir():
        shutil.copytree(source, target, copy_function=_link_file)
    else:
        _link_file(str(source), str(target))


def _link_file(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def load_embedder(files: EncoderFiles, *, runtime: str = "encoder_onnx_int8", threads: int = 1,
                  batch_size: int = 64) -> EmbedFn:
    from models.onnx_encoder import OnnxEncoder

    if runtime == "static_encoder":
        from models.static_encoder import StaticEncoder

        if files.static_dir is None:
            raise ValueError("the static encoder tier needs files from prepare_static_encoder")
        static = StaticEncoder.load(files.static_dir)
        return lambda texts: static.embed(list(texts))
    onnx = files.onnx_int8 if runtime == "encoder_onnx_int8" else files.onnx
    if onnx is None:
        raise ValueError(f"no ONNX export for runtime encoder {runtime!r}: use prepare_encoder")
    encoder = OnnxEncoder.load(onnx, files.encoder_dir, threads=threads, max_length=files.max_length)
    return lambda texts: encoder.embed(list(texts), batch_size=batch_size)


# ---------------------------------------------------------------- embedding cache

class EmbeddingCache:
    """text -> float32 vector on disk for one encoder key: append-only shards of (sha1, vector)."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / "embeddings" / key
        self.index: dict[bytes, tuple[int, int]] = {}
        self.shards: list[np.ndarray] = []
        if self.folder.is_dir():
            for keys_file in sorted(self.folder.glob("keys-*.npy")):
                vectors = np.load(keys_file.with_name(keys_file.name.replace("keys-", "vecs-")))
                for row, digest in enumerate(np.load(keys_file)):
                    self.index[digest.tobytes()] = (len(self.shards), row)
                self.shards.append(vectors)

    @staticmethod
    def digest(text: str) -> bytes:
        return hashlib.sha1(text.encode("utf-8")).digest()

    def __contains__(self, text: str) -> bool:
        return self.digest(text) in self.index

    def get(self, text: str) -> np.ndarray:
        shard, row = self.index[self.digest(text)]
        return self.shards[shard][row]

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        if not texts:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{len(list(self.folder.glob('keys-*.npy'))):05d}-{os.getpid()}-{os.urandom(3).hex()}"
        # (N, 20) uint8, not an "S20" array: numpy's bytes type drops trailing NUL bytes of a digest.
        digests = np.frombuffer(b"".join(self.digest(t) for t in texts), dtype=np.uint8).reshape(len(texts), 20)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        np.save(self.folder / f"vecs-{name}.npy", vectors)  # vectors first: keys make a shard visible
        np.save(self.folder / f"keys-{name}.npy", digests)
        for row, digest in enumerate(digests):
            self.index[digest.tobytes()] = (len(self.shards), row)
        self.shards.append(vectors)


def embed_texts(
    texts: Sequence[str], embed: EmbedFn, cache: EmbeddingCache | None, *, chunk: int = 2048,
    progress: bool = False,
) -> np.ndarray:
    """(len(texts), D) for distinct texts, embedding only those the cache lacks (in chunks, so an
    interrupted job keeps what it has done)."""
    missing = [t for t in texts if cache is None or t not in cache]
    computed: dict[str, np.ndarray] = {}
    if missing:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("embedding messages"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("embed", total=len(missing))
            for start in range(0, len(missing), chunk):
                part = missing[start : start + chunk]
                vectors = np.asarray(embed(part), dtype=np.float32)
                if cache is not None:
                    cache.add(part, vectors)
                else:
                    computed.update(zip(part, vectors, strict=True))
                bar.advance(task, len(part))
    rows = [cache.get(t) if cache is not None else computed[t] for t in texts]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32)
