"""Runtime scoring bridge: what a model version needs to turn a viewer's chat into a donor probability.

Two halves, both used by training *and* by the live stream agents, so the features a model was
trained on are, by construction, the features it sees live:

- pure feature functions (`preprocess_text`, `sequence_input`, `history_vector`) driven by the
  `FeatureConfig` stored in each registry version;
- `DonorScorer`, which loads a registry version's int8 ONNX encoder and ONNX classifier
  (onnxruntime, one thread) and scores many viewers in one padded batch.

Nothing here talks to Kafka or PostgreSQL; callers bring messages and (optionally) viewer history.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.text import strip_member_signals
from models.calibration import Calibration
from models.lexical import lexical_matrix
from models.vector_cache import VectorCache

if TYPE_CHECKING:
    from infra.repository import ViewerHistory
    from models.registry import ModelVersion

# The worker's micro-batches arrive in chat order; sorted by length and run in pieces of 8, short
# messages are not padded to the longest one (bench/results: 2.5x the messages per CPU-second).
EMBED_PIECE_SIZE = 8
EMBED_CACHE_SIZE = 20_000  # texts; ~30 MB of float32 vectors at 384 dimensions

N_EXTRAS = 4  # message length, emote ratio, question mark, message number
N_HISTORY = 6  # see history_vector
LOG_SCALE = 5.0  # log1p features divided by this land roughly in [0, 2]

_SHORTCODE = re.compile(r":[^:\s]+:")
CLOCKS = ("recency", "stream")


@dataclass(frozen=True)
class FeatureConfig:
    """How raw chat becomes model inputs; stored in the registry manifest as "feature_config"."""

    label: str = "paid"
    strip_member_signals: bool = False  # True for membership labels: member emojis would give it away
    max_messages: int = 32  # newest messages a sequence keeps
    use_extras: bool = True
    use_history: bool = False
    lexical_buckets: int = 0  # hashed word/trigram ids per message (models.lexical); 0 = none
    lexical_per_message: int = 48
    # The first time input of each message. "recency": seconds before the viewer's newest message,
    # which says how bursty the recent chat is whatever the stream's length. "stream": seconds since
    # the stream started (models before 2026-12): a model learns the training streams' length and
    # payment schedule from it, and a 4 h stream is out of its range (issue 14).
    clock: str = "recency"

    @property
    def uses_lexical(self) -> bool:
        return self.lexical_buckets > 0

    @property
    def n_extras(self) -> int:
        return N_EXTRAS if self.use_extras else 0

    @property
    def n_history(self) -> int:
        return N_HISTORY if self.use_history else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("clock", "stream")  # manifests written before the clock was a choice
        return cls(**known)

    def __post_init__(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)} (got {self.clock!r})")


# ---------------------------------------------------------------- per-message features

def preprocess_text(text: str, config: FeatureConfig) -> str:
    """The text the encoder sees. Member-only emojis (`:_name:`) are removed for membership labels."""
    text = text or ""
    if config.strip_member_signals:
        text = strip_member_signals(text)
    return " ".join(text.split())


def _emote_ratio(text: str) -> float:
    """Share of whitespace tokens that are emoji shortcodes or symbol-only (no letter or digit)."""
    tokens = text.split()
    if not tokens:
        return 0.0
    emotes = sum(1 for t in tokens if _SHORTCODE.fullmatch(t) or not any(c.isalnum() for c in t))
    return emotes / len(tokens)


def message_extras(texts: Sequence[str], message_numbers: Sequence[int]) -> np.ndarray:
    """(T, 4) cheap per-message features of *preprocessed* texts; message_numbers are 1-based
    positions among the viewer's input messages in the stream (so the count survives truncation)."""
    rows = [
        (
            np.log1p(len(text)) / LOG_SCALE,
            _emote_ratio(text),
            1.0 if "?" in text else 0.0,
            np.log1p(number) / LOG_SCALE,
        )
        for text, number in zip(texts, message_numbers, strict=True)
    ]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), N_EXTRAS)


def history_vector(history: ViewerHistory | None) -> np.ndarray:
    """(6,) what was known about the viewer before this stream (infra.repository.ViewerHistory)."""
    if history is None:
        return np.zeros(N_HISTORY, dtype=np.float32)
    return np.asarray(
        [
            np.log1p(history.past_streams) / LOG_SCALE,
            np.log1p(history.past_messages) / LOG_SCALE,
            np.log1p(history.past_paid_events) / LOG_SCALE,
            np.log1p(max(history.past_paid_amount, 0.0)) / LOG_SCALE,
            1.0 if history.was_member else 0.0,
            1.0 if history.past_streams > 0 else 0.0,
        ],
        dtype=np.float32,
    )


# ---------------------------------------------------------------- sequences

@dataclass
class ViewerSequenceInput:
    """One viewer's model input: T messages (oldest first), T >= 1."""

    embeddings: np.ndarray  # (T, D) float32
    seconds_since_start: np.ndarray  # (T,) the first clock: FeatureConfig.clock (recency or stream time)
    seconds_since_prev: np.ndarray  # (T,) gap since the viewer's previous input message
    extras: np.ndarray | None = None  # (T, k)
    history: np.ndarray | None = None  # (h,)
    message_ids: tuple[str, ...] = field(default_factory=tuple)
    lexical: np.ndarray | None = None  # (T, ids per message) hashed word/trigram ids, 0 = padding

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def without(self, index: int) -> ViewerSequenceInput:
        """The same sequence with message `index` left out (leave-one-out explanations)."""
        keep = np.arange(len(self)) != index
        return ViewerSequenceInput(
            embeddings=self.embeddings[keep],
            seconds_since_start=self.seconds_since_start[keep],
            seconds_since_prev=self.seconds_since_prev[keep],
            extras=None if self.extras is None else self.extras[keep],
            history=self.history,
            lexical=None if self.lexical is None else self.lexical[keep],
        )

    def tail(self, n: int) -> ViewerSequenceInput:
        if len(self) <= n:
            return self
        return ViewerSequenceInput(
            embeddings=self.embeddings[-n:],
            seconds_since_start=self.seconds_since_start[-n:],
            seconds_since_prev=self.seconds_since_prev[-n:],
            extras=None if self.extras is None else self.extras[-n:],
            history=self.history,
            message_ids=self.message_ids[-n:],
            lexical=None if self.lexical is None else self.lexical[-n:],
        )


def seconds_since_start(timestamp: float, offset_seconds: float | None, origin: float) -> float:
    """The stream clock a model sees: the source's own offset where it has one (replays, archives),
    else seconds since the stream's first message (unix seconds `timestamp` and `origin`)."""
    if offset_seconds is not None:
        return max(float(offset_seconds), 0.0)
    return max(timestamp - origin, 0.0)


def time_features(
    seconds_since_start: Sequence[float], previous_seconds: float | None = None, clock: str = "stream",
) -> tuple[np.ndarray, np.ndarray]:
    """(clock, gap since the viewer's previous input message) per message. The clock is seconds since
    start, or for clock="recency" seconds before the newest message of the window. The first gap is
    measured from `previous_seconds` (the message before the window) or, for a first message, from
    stream start."""
    starts = np.maximum(np.asarray(seconds_since_start, dtype=np.float32), 0.0)
    previous = np.empty_like(starts)
    if len(starts):
        previous[0] = 0.0 if previous_seconds is None else previous_seconds
        previous[1:] = starts[:-1]
    gaps = np.maximum(starts - previous, 0.0).astype(np.float32)
    return window_clock(starts, clock), gaps


def window_clock(seconds_since_start: np.ndarray, clock: str) -> np.ndarray:
    """The model's first time input for one window (oldest first) of stream-clock seconds."""
    starts = np.asarray(seconds_since_start, dtype=np.float32)
    if clock == "recency" and len(starts):
        return (starts[-1] - starts).astype(np.float32)
    return starts


def sequence_input(
    embeddings: np.ndarray,
    seconds_since_start: Sequence[float],
    *,
    texts: Sequence[str],
    message_numbers: Sequence[int],
    config: FeatureConfig,
    previous_seconds: float | None = None,
    history: ViewerHistory | None = None,
    message_ids: Sequence[str] = (),
) -> ViewerSequenceInput:
    """Assemble one viewer's input from already-embedded, *preprocessed* messages (oldest first)."""
    starts, gaps = time_features(seconds_since_start, previous_seconds, config.clock)
    return ViewerSequenceInput(
        embeddings=np.asarray(embeddings, dtype=np.float32),
        seconds_since_start=starts,
        seconds_since_prev=gaps,
        extras=message_extras(texts, message_numbers) if config.use_extras else None,
        history=history_vector(history) if config.use_history else None,
        message_ids=tuple(message_ids),
        lexical=(lexical_matrix(texts, config.lexical_buckets, config.lexical_per_message)
                 if config.uses_lexical else None),
    )


def pad_batch(sequences: Sequence[ViewerSequenceInput], config: FeatureConfig) -> dict[str, np.ndarray]:
    """ONNX classifier feed: pad every sequence to the batch's longest (padding_mask True = padding)."""
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one message")
    batch, longest, dim = len(sequences), max(len(s) for s in sequences), sequences[0].embeddings.shape[1]
    feed = {
        "embeddings": np.zeros((batch, longest, dim), dtype=np.float32),
        "seconds_since_start": np.zeros((batch, longest), dtype=np.float32),
        "seconds_since_prev": np.zeros((batch, longest), dtype=np.float32),
        "padding_mask": np.ones((batch, longest), dtype=bool),
    }
    if config.use_extras:
        feed["extras"] = np.zeros((batch, longest, config.n_extras), dtype=np.float32)
    if config.use_history:
        feed["history"] = np.zeros((batch, config.n_history), dtype=np.float32)
    if config.uses_lexical:
        feed["lexical_ids"] = np.zeros((batch, longest, config.lexical_per_message), dtype=np.int64)
    for row, seq in enumerate(sequences):
        n = len(seq)
        feed["embeddings"][row, :n] = seq.embeddings
        feed["seconds_since_start"][row, :n] = seq.seconds_since_start
        feed["seconds_since_prev"][row, :n] = seq.seconds_since_prev
        feed["padding_mask"][row, :n] = False
        if config.use_extras:
            if seq.extras is None:
                raise ValueError("this model uses per-message extras; the sequence has none")
            feed["extras"][row, :n] = seq.extras
        if config.use_history and seq.history is not None:
            feed["history"][row] = seq.history
        if config.uses_lexical:
            if seq.lexical is None:
                raise ValueError("this model reads hashed lexical ids; the sequence has none")
            feed["lexical_ids"][row, :n] = seq.lexical
    return feed


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


# ---------------------------------------------------------------- the scorer

@dataclass
class DonorScorer:
    """A registry version ready to score: its encoder (int8 ONNX BERT, or the static tier) + ONNX
    classifier, one thread each."""

    version: str
    encoder: Any  # models.onnx_encoder.OnnxEncoder or models.static_encoder.StaticEncoder
    session: Any  # onnxruntime.InferenceSession
    feature_config: FeatureConfig
    threshold: float = 0.5
    calibration: Calibration = field(default_factory=Calibration)
    max_batch: int = 256
    cache: VectorCache = field(default_factory=lambda: VectorCache(EMBED_CACHE_SIZE))

    @classmethod
    def load(cls, version: ModelVersion, *, threads: int = 1) -> DonorScorer:
        import onnxruntime as ort

        from models.onnx_encoder import OnnxEncoder
        from models.static_encoder import StaticEncoder

        encoder: Any
        if version.encoder_tier == "static":
            encoder = StaticEncoder.load(version.file("static_encoder"))
        else:
            encoder = OnnxEncoder.load(
                version.file(version.runtime_encoder), version.file("encoder_dir"),
                threads=threads, max_length=int(version.manifest.get("encoder_max_length", 64)),
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(version.file("classifier_onnx")), options, providers=["CPUExecutionProvider"]
        )
        return cls(
            version=version.version,
            encoder=encoder,
            session=session,
            feature_config=FeatureConfig.from_dict(version.manifest.get("feature_config", {})),
            threshold=float(version.manifest.get("threshold", 0.5)),
            calibration=Calibration.from_dict(version.manifest.get("calibration")),
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def uses_history(self) -> bool:
        return self.feature_config.use_history

    def preprocess(self, text: str) -> str:
        return preprocess_text(text, self.feature_config)

    def embed(self, texts: Sequence[str], batch_size: int = EMBED_PIECE_SIZE) -> np.ndarray:
        """Raw chat texts -> (N, D) float32, through the same preprocessing as training.
        Texts seen recently (or twice in this call) are encoded once."""
        prepared = [self.preprocess(t) for t in texts]
        out = np.empty((len(prepared), self.embedding_dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for row, text in enumerate(prepared):
            vector = self.cache.get(text)
            if vector is None:
                missing.setdefault(text, []).append(row)
            else:
                out[row] = vector
        if missing:
            unique = list(missing)
            for text, vector in zip(unique, self.encoder.embed(unique, batch_size=batch_size), strict=True):
                self.cache.put(text, vector.copy())  # a view would keep its whole batch array alive
                out[missing[text]] = vector
        return out

    def logits(self, sequences: Sequence[ViewerSequenceInput]) -> np.ndarray:
        out = []
        limit = self.feature_config.max_messages
        for start in range(0, len(sequences), self.max_batch):
            chunk = [s.tail(limit) for s in sequences[start : start + self.max_batch]]
            (logit,) = self.session.run(["logit"], pad_batch(chunk, self.feature_config))
            out.append(np.asarray(logit, dtype=np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def score(self, sequences: Sequence[ViewerSequenceInput]) -> np.ndarray:
        """(N,) calibrated donor probabilities, one padded batch per `max_batch` viewers."""
        return self.calibration.probabilities(self.logits(sequences))

    def explain(self, sequence: ViewerSequenceInput, k: int = 3) -> list[int]:
        """Indices (into `sequence`) of the <= k messages whose removal lowers the score most."""
        sequence = sequence.tail(self.feature_config.max_messages)
        if len(sequence) < 2:
            return [0] if len(sequence) == 1 else []
        variants = [sequence] + [sequence.without(i) for i in range(len(sequence))]
        logits = self.logits(variants)
        drop = logits[0] - logits[1:]  # how much each message pushed the score up
        order = np.argsort(-drop, kind="stable")
        return [int(i) for i in order[:k] if drop[i] > 0] or [int(order[0])]
