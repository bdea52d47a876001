"""Generator presets for `producers.simulator`: the knobs of the generative story, one dataclass each.

A model trained on one simulator learns that simulator's habits. The presets exist so that the
habits can be changed on purpose and the model checked against the change:

- `classic`: the original generator (fixed 60 min / 300 viewers unless told otherwise, the Wings of
  Redemption first-payment deciles, which put most first payments early). Kept for the demo and
  for tests that need a known size.
- `mixed`: the training default. Every stream draws its own length (20 min - 3 h), audience
  (50 - 800 chatters), donor share and payment timing (throughout the stream: uniform, front- or
  back-loaded), so neither absolute stream time nor a payment schedule predicts a donor.
- `shift`: a test set no model is trained on. Longer (2 - 6 h) and bigger (200 - 3,000 chatters)
  streams, back-loaded payments, another streamer, other phrasings for every template, a language
  the training presets never use (French) and a weaker, differently shaped donor signal.
- `null`: a leak detector. Donors chat exactly like everyone else before they pay (same rate, no
  burst, same style, no superfans), are drawn uniformly from the audience whatever they paid before
  (so a viewer's history says nothing either), and pay right after their last ordinary message. A
  payment inside the presence would cut a donor's before-paid window short of everyone else's: the
  truncation alone (fewer messages, an earlier last message) is a difference a model can use, and
  the first version of this preset had it (issue 14's report: p = 0.002 for a chat-only baseline).
  So a leak-free model can do no better than chance on it.

Ranges are drawn log-uniformly per stream; an explicit `viewers=` / `minutes=` / `donor_share=`
passed to `simulate()` fixes that value for every stream.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

Weighted = tuple[tuple[str, float], ...]

# First-payment position in the stream, by decile (see producers.simulator's calibration notes).
WOS_DECILES = (0.181, 0.13, 0.103, 0.104, 0.099, 0.103, 0.101, 0.089, 0.064, 0.026)
UNIFORM_DECILES = (0.1,) * 10
LATE_DECILES = tuple(reversed(WOS_DECILES))

NORMAL_STYLE: Weighted = (("reaction", 0.45), ("game", 0.25), ("social", 0.15), ("question", 0.06),
                          ("request", 0.03), ("praise", 0.06))
DONOR_STYLE: Weighted = (("reaction", 0.25), ("game", 0.15), ("social", 0.10), ("question", 0.15),
                         ("request", 0.12), ("praise", 0.23))
# Shift: the donor lean is weaker and comes through other categories (requests and social talk).
SHIFT_DONOR_STYLE: Weighted = (("reaction", 0.32), ("game", 0.18), ("social", 0.20), ("question", 0.10),
                               ("request", 0.12), ("praise", 0.08))


@dataclass(frozen=True)
class SimPreset:
    name: str
    minutes: tuple[float, float] = (60.0, 60.0)
    viewers: tuple[int, int] = (300, 300)
    donor_share: tuple[float, float] = (0.05, 0.05)
    # per stream, one of these first-payment decile histograms is drawn
    payment_timing: tuple[tuple[float, ...], ...] = (WOS_DECILES,)
    early_arrival_share: float = 0.6  # share of viewers who arrive in the first tenth
    languages: Weighted = (("en", 0.55), ("de", 0.12), ("id", 0.12), ("es", 0.11), ("pt", 0.10))
    templates: str = "base"  # producers.simulator TEMPLATE_SETS key
    streamer: str = "Nova"
    club: str = "Nova Crew"
    # donor behaviour before the first payment (all neutral in `null`)
    donor_rate_boost: float = 1.6
    burst: tuple[int, int] = (2, 4)  # extra messages in the 10 min before paying; (0, 0) = none
    donor_style: Weighted = DONOR_STYLE
    normal_style: Weighted = NORMAL_STYLE
    address_streamer: tuple[float, float] = (0.12, 0.35)  # (others, donors)
    lurker_donor_share: float = 0.25
    superfan_share: float = 0.08
    # null: donors drawn uniformly (not repeat payers first, not by generosity), and they pay when
    # their ordinary presence ends, so their before-paid window is their whole chat, like everyone's
    neutral_donors: bool = False
    typo_rate: float = 0.08
    notes: str = field(default="", compare=False)

    @property
    def has_donor_signal(self) -> bool:
        return (self.donor_rate_boost != 1.0 or self.burst != (0, 0) or self.donor_style != self.normal_style
                or self.address_streamer[0] != self.address_streamer[1])

    def draw_minutes(self, rng: random.Random) -> float:
        return _log_uniform(rng, *self.minutes)

    def draw_viewers(self, rng: random.Random) -> int:
        return max(2, round(_log_uniform(rng, *self.viewers)))

    def draw_donor_share(self, rng: random.Random) -> float:
        return _log_uniform(rng, *self.donor_share)

    def draw_timing(self, rng: random.Random) -> tuple[float, ...]:
        return rng.choice(self.payment_timing)


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    if low == high:
        return low
    return math.exp(rng.uniform(math.log(low), math.log(high)))


PRESETS: dict[str, SimPreset] = {
    "classic": SimPreset("classic", notes="the original generator: fixed size, front-loaded payments"),
    "mixed": SimPreset(
        "mixed", minutes=(20.0, 180.0), viewers=(50, 800), donor_share=(0.03, 0.08),
        payment_timing=(UNIFORM_DECILES, WOS_DECILES, LATE_DECILES, UNIFORM_DECILES),
        notes="training default: lengths, sizes and payment timing vary per stream",
    ),
    "shift": SimPreset(
        "shift", minutes=(120.0, 360.0), viewers=(200, 3000), donor_share=(0.02, 0.05),
        payment_timing=(LATE_DECILES, UNIFORM_DECILES), early_arrival_share=0.3,
        languages=(("en", 0.45), ("fr", 0.2), ("es", 0.15), ("id", 0.2)), templates="shift",
        streamer="Kiri", club="Kiri Club", donor_rate_boost=1.4, burst=(1, 3), donor_style=SHIFT_DONOR_STYLE,
        address_streamer=(0.08, 0.25), lurker_donor_share=0.35, superfan_share=0.05, typo_rate=0.12,
        notes="held-back shape: long, big, late payments, other templates, language and streamer",
    ),
    "null": SimPreset(
        "null", minutes=(20.0, 180.0), viewers=(50, 800), donor_share=(0.03, 0.08),
        payment_timing=(UNIFORM_DECILES,), donor_rate_boost=1.0, burst=(0, 0), donor_style=NORMAL_STYLE,
        address_streamer=(0.12, 0.12), lurker_donor_share=0.0, superfan_share=0.0, neutral_donors=True,
        notes="leak detector: donors chat exactly like everyone else before paying",
    ),
}


def preset_named(name: str) -> SimPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown simulator preset {name!r}; choose one of {', '.join(PRESETS)}") from None
