"""Simulator presets: streams of many shapes, payments throughout, a shift set, and a NULL set in
which donors chat exactly like everyone else before they pay (the leak detector)."""

from __future__ import annotations

import math
from functools import cache

import pytest

from producers.sim_presets import PRESETS, preset_named
from producers.sim_shift_text import SHIFT_TEMPLATES
from producers.simulator import TEMPLATES, SimulatedStream, simulate


@cache
def streams(preset: str, n: int = 16, seed: int = 3) -> tuple[SimulatedStream, ...]:
    return tuple(simulate(n, seed, preset=preset))


def minutes(stream: SimulatedStream) -> float:
    return (stream.messages[-1].timestamp - stream.messages[0].timestamp).total_seconds() / 60


def first_payment_positions(sample: tuple[SimulatedStream, ...]) -> list[float]:
    out = []
    for s in sample:
        start, length = s.started_at, minutes(s) * 60
        out += [(s.first_donation_time(v) - start).total_seconds() / length for v in s.donor_ids]
    return out


def pre_payment_messages(stream: SimulatedStream, streamer: str) -> tuple[list[str], list[str]]:
    """(donors' texts before their first payment, everyone else's texts in the stream)."""
    donors, others = [], []
    for m in stream.messages:
        if not m.is_model_input or m.author_name == streamer:
            continue
        first = stream.first_donation_time(m.viewer_id)
        if first is None:
            others.append(m.text)
        elif m.timestamp < first:
            donors.append(m.text)
    return donors, others


def share_z(a: list[bool], b: list[bool]) -> float:
    """Two-proportion z statistic (pooled)."""
    pa, pb = sum(a) / len(a), sum(b) / len(b)
    pooled = (sum(a) + sum(b)) / (len(a) + len(b))
    se = math.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
    return (pa - pb) / se if se else 0.0


def engaged(text: str, streamer: str) -> bool:
    return "?" in text or streamer in text


def test_mixed_streams_vary_in_length_and_size() -> None:
    lengths = [minutes(s) for s in streams("mixed")]
    sizes = [len({m.viewer_id for m in s.messages}) for s in streams("mixed")]
    assert min(lengths) < 45 and max(lengths) > 120
    assert max(sizes) > 3 * min(sizes)
    assert all(120 * 0.9 <= minutes(s) <= 360 for s in streams("shift", 4))


def test_payments_come_throughout_the_stream_not_mostly_early() -> None:
    mixed = first_payment_positions(streams("mixed"))
    classic = first_payment_positions(tuple(simulate(16, 3, viewers=200, minutes=60)))
    early = lambda xs: sum(x < 0.3 for x in xs) / len(xs)  # noqa: E731
    late = lambda xs: sum(x > 0.7 for x in xs) / len(xs)  # noqa: E731
    assert early(classic) > 0.36  # the WoS deciles: 41 % in the first 30 %
    assert 0.2 < early(mixed) < 0.36 and late(mixed) > 0.22


def test_shift_preset_speaks_other_templates_and_a_new_language() -> None:
    texts = [m.text for s in streams("shift", 4) for m in s.messages if m.is_model_input]
    base = {t for language in ("en", "de") for category in ("question", "praise")
            for t in TEMPLATES[language][category]}
    assert not any(t in base for t in texts)
    assert any(t.split(" Kiri")[0] in SHIFT_TEMPLATES["fr"]["praise"] for t in texts)
    assert any("Kiri" in t for t in texts) and not any("Nova" in t for t in texts)


def test_null_donors_chat_like_everyone_else_before_paying() -> None:
    """Feature parity: before paying, NULL donors' messages are as engaged (questions, addressing the
    streamer) and as long as everyone else's; the same statistic finds the real signal in `mixed`."""
    def z_of(preset: str) -> tuple[float, float]:
        donors, others = [], []
        streamer = PRESETS[preset].streamer
        for s in streams(preset, 24):
            d, o = pre_payment_messages(s, streamer)
            donors += d
            others += o
        z_engaged = share_z([engaged(t, streamer) for t in donors], [engaged(t, streamer) for t in others])
        z_long = share_z([len(t) > 20 for t in donors], [len(t) > 20 for t in others])
        return z_engaged, z_long

    null_engaged, null_long = z_of("null")
    assert abs(null_engaged) < 3 and abs(null_long) < 3
    mixed_engaged, _ = z_of("mixed")
    assert mixed_engaged > 5  # the test has the power to see a real donor signal


def test_null_donors_are_not_chattier_before_paying() -> None:
    """Rate parity: the chat rate a NULL donor has before paying is drawn like everyone else's (the
    generator's own per-viewer rates), while `mixed` donors chat faster before they pay."""
    from scipy.stats import mannwhitneyu

    def rates(preset: str) -> tuple[list[float], list[float]]:
        donors, others = [], []
        for s in streams(preset, 24):
            for viewer, rate in s.pre_payment_rates.items():
                (donors if viewer in s.donor_ids else others).append(rate)
        return donors, others

    donors, others = rates("null")
    assert len(donors) > 200 and mannwhitneyu(donors, others).pvalue > 0.01
    donors, others = rates("mixed")
    assert mannwhitneyu(donors, others, alternative="greater").pvalue < 1e-3


def before_paid_counts(stream: SimulatedStream) -> tuple[list[int], list[int]]:
    """Input messages each chatter has at the before-paid snapshot: (donors, everyone else)."""
    counts: dict[str, int] = {}
    for m in stream.messages:
        first = stream.first_donation_time(m.viewer_id)
        if m.is_model_input and (first is None or m.timestamp < first):
            counts[m.viewer_id] = counts.get(m.viewer_id, 0) + 1
    donors = [n for v, n in counts.items() if v in stream.donor_ids]
    return donors, [n for v, n in counts.items() if v not in stream.donor_ids]


def test_null_donors_have_as_many_messages_before_paying_as_others_have_in_all() -> None:
    """Window parity: a NULL donor pays after their last ordinary message, so the before-paid window
    holds as many messages as a non-donor's whole chat (a payment inside the presence would cut it
    short, and the count alone would tell donors apart); `mixed` donors' windows are longer."""
    from scipy.stats import mannwhitneyu

    def counts(preset: str) -> tuple[list[int], list[int]]:
        donors, others = [], []
        for s in streams(preset, 24):
            d, o = before_paid_counts(s)
            donors += d
            others += o
        return donors, others

    donors, others = counts("null")
    assert len(donors) > 200 and mannwhitneyu(donors, others).pvalue > 0.01
    donors, others = counts("mixed")
    assert mannwhitneyu(donors, others, alternative="greater").pvalue < 1e-3


def test_null_donors_are_drawn_whatever_they_paid_before() -> None:
    """History parity: in NULL a viewer who paid in an earlier stream is no likelier to pay again
    (the history track would otherwise read a signal the chat does not carry); in `mixed` they are."""
    def z_of(preset: str) -> float:
        paid_before: set[str] = set()
        donors, others = [], []
        for s in streams(preset, 24):
            chatters = {m.viewer_id for m in s.messages if m.is_model_input}
            for viewer in chatters:
                (donors if viewer in s.donor_ids else others).append(viewer in paid_before)
            paid_before |= set(s.donor_ids)
        return share_z(donors, others)

    assert abs(z_of("null")) < 3
    assert z_of("mixed") > 5


def test_unknown_preset_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown simulator preset 'nope'.*mixed"):
        preset_named("nope")
    assert not PRESETS["null"].has_donor_signal and PRESETS["mixed"].has_donor_signal
