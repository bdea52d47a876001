"""`donorcast simulate`: seeded, realistic livestream chats with ground-truth donors.

Real chat data here has no donation events (see shared/data/raw), so donation prediction is
trained and checked on simulated streams whose ground truth we know. The output is a list of
`SimulatedStream` (chat-downloader items, the `ChatMessage`s read from them, and the truth), and
`write_chat_downloader_json` writes each stream exactly as `chat_downloader --output x.json` does,
so simulated streams go through the same reader as real ones. (`--to-kafka`: publish
`stream.messages` with the shared publisher; `simulate()` is pure and has no I/O.)

Generative story
----------------
Every number below in [brackets] is a preset knob (producers/sim_presets.py; `--preset`): `classic`
(the values shown, every stream 60 min / 300 viewers), `mixed` (the training default: each stream
draws its length from 20 min - 3 h, its audience from 50 - 800 and its payment timing from
uniform / front- / back-loaded), `shift` (held back for testing: 2 - 6 h, 200 - 3,000, back-loaded,
other templates, French, another streamer, a weaker donor signal) and `null` (donors chat exactly
like everyone else before paying: the leak detector).

1. A channel has a community of `1.5 x viewers` people, shared by all N streams (so the same
   channel ids come back). Each has a language ([en/de/id/es/pt]), a heavy-tailed chat rate
   (lognormal, median 6 msgs/h, sigma 1.1: most viewers say little, a few say a lot), a habit of
   attending, a paid-membership flag (more likely for active viewers), and a latent generosity
   (Beta(0.6, 6): most near zero, a long tail). [8%] are "superfans" who talk like donors but never
   pay, and 2 are moderators; the streamer chats as the owner.
2. Each stream draws `viewers` attendees (weighted by habit); each arrives (60% in the first
   tenth of the stream [60%]) and stays an exponential while, and chats as a Poisson process.
3. `donor_share` of attendees ([5%]) become this stream's donors. After the first stream,
   each donor slot is filled with probability 0.47 by a viewer who already paid in an earlier
   stream (weighted by generosity), else by a new payer weighted by generosity [`null`: uniformly
   from the audience, past payments and generosity ignored].
4. Donation timing and amounts follow the Wings of Redemption Super Chat logs (below): the first
   payment's position in the stream from their decile histogram [or a uniform or back-loaded
   one; `null`: right after the donor's ordinary presence ends, so the chat before it is the
   donor's whole chat], extra payments by the same donor
   (1 payment 79%, 2: 13%, 3: 4%, 4: 1.5%, 5: 2.5%) after exponential gaps with a 6 min median.
   Kinds: Super Chat 74%, Super Sticker 12%, gifted memberships 8% (1/5/10/20 gifts), new
   membership 6% (non-members). USD price tier from WoS, shown in the donor's local currency at
   that currency's usual price point (USD, GBP, CAD, AUD, EUR, MXN, IDR, BRL).
5. BEFORE their first payment, [75%] of donors behave differently (learnable, noisy): [1.6x] chat
   rate and a burst of [2-4] extra messages in the 10 minutes before paying; they address the
   streamer by name [35%] of the time (others [12%]), and their messages are more often questions
   (15% vs 6%), requests (12% vs 3%) and praise (23% vs 6%), less often bare reactions [style
   mixes]. The other [25%] ("lurker donors") look like everyone else. In `null` every one of
   these is neutral: same rate, no burst, same style, no superfans. Superfans use the donor style all stream long
   but never pay, so the style is evidence, not proof.
6. Text comes from per-language templates [base or shift set] with emoji, global emotes, member-only `:_simX:`
   emotes (members only), and typos (8% of messages get a swapped, dropped or doubled letter).
   After a payment the streamer thanks the donor and other viewers react.

Calibration (computed 2026-11-28 from ../shared/data/raw/wingsofsuperchats-streams: 86 streams,
1,227 Super Chats, 455 donors, USD as converted by their collector):
- amount tiers (USD): $1 5.7%, $2 42.1%, $5 32.6%, $10 11.8%, $20 3.9%, $50 2.4%, $100 1.4%
  (mean $7.26, median $4.99); ".99" and round prices about equally common;
- first-Super-Chat position in the stream by decile: 18.1, 13.0, 10.3, 10.4, 9.9, 10.3, 10.1,
  8.9, 6.4, 2.6 % (front-loaded, few near the end);
- Super Chats per donor per stream: 1 = 692, 2 = 113, 3 = 31, 4 = 12, 5+ = 25 donor-streams;
  median gap between one donor's Super Chats in a stream 6.1 min;
- repeat donors: 155 of 455 donors (34%) paid in two or more streams, and 47% of Super Chats
  came from a donor who had paid in an earlier stream (used as the repeat probability);
- median 13 Super Chats per stream (5.4 per hour). We simulate more donors per viewer than that
  channel had (it has thousands of chatters) so that a 300-viewer hour holds enough positives.
"""

from __future__ import annotations

import json
import math
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from infra.events import ChatMessage, MessageKind
from producers import sim_shift_text as shift_text
from producers.sim_presets import PRESETS, SimPreset, preset_named

# ---------------------------------------------------------------- calibration (see docstring)

USD_TIERS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
USD_TIER_SHARES = (0.057, 0.4214, 0.326, 0.1182, 0.0391, 0.0244, 0.0139)
PAYMENTS_PER_DONOR = ((1, 692), (2, 113), (3, 31), (4, 12), (5, 25))
REPEAT_GAP_MEDIAN_MIN = 6.1
REPEAT_DONOR_PROBABILITY = 0.47
KIND_SHARES = (("paid_message", 0.74), ("paid_sticker", 0.12), ("gift", 0.08), ("new_member", 0.06))
GIFT_COUNTS = ((1, 0.3), (5, 0.4), (10, 0.2), (20, 0.1))
MEMBERSHIP_USD = 4.99

# currency -> (symbol as YouTube shows it, local price per USD tier, decimals)
PRICE_POINTS: dict[str, tuple[str, tuple[float, ...], int]] = {
    "USD": ("$", (1, 2, 5, 10, 20, 50, 100), 2),
    "GBP": ("£", (1, 2, 4, 8, 16, 40, 80), 2),
    "CAD": ("CA$", (1.5, 3, 7, 14, 28, 70, 140), 2),
    "AUD": ("A$", (1.5, 3, 8, 15, 30, 80, 150), 2),
    "EUR": ("€", (1, 2, 5, 10, 20, 50, 100), 2),
    "MXN": ("MX$", (20, 40, 100, 200, 400, 1000, 2000), 2),
    "IDR": ("IDR ", (15000, 30000, 75000, 150000, 300000, 750000, 1500000), 0),
    "BRL": ("R$", (5, 10, 25, 50, 100, 250, 500), 2),
}
CURRENCY_BY_LANGUAGE = {
    "en": (("USD", 0.7), ("GBP", 0.12), ("CAD", 0.09), ("AUD", 0.09)),
    "de": (("EUR", 1.0),), "id": (("IDR", 1.0),), "es": (("EUR", 0.4), ("MXN", 0.6)), "pt": (("BRL", 1.0),),
    "fr": (("EUR", 0.8), ("CAD", 0.2)),
}

# Message style mixes, donor behaviour and the streamer's name are preset fields (producers.sim_presets).
STREAMER = PRESETS["classic"].streamer
GAMES = ("Elden Ring", "Minecraft", "Hades", "Stardew", "Tetris", "Celeste", "Balatro")
EMOJI = ("😂", "🔥", "❤️", "👋", "😭", "💀", "🙏", "✨", "😳", "🎉")
GLOBAL_EMOTES = (":elbowcough:", ":buffering:", ":yougotthis:", ":hand-pink-waving:")
MEMBER_EMOTES = (":_simHeart:", ":_simLaugh:", ":_simWave:", ":_simPog:")

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "reaction": ("lol", "LMAO", "W", "no way", "gg", "that was close", "bruh", "clean", "huge", "rip", "omg",
                     "lets gooo", "unlucky", "he's cooked"),
        "game": ("use the other weapon", "the boss is weak to fire", "go left", "you missed the chest",
                 "check the map", "this level is hard", "grab the potion first", "dodge earlier"),
        "social": ("hi chat", "anyone from {place}?", "good morning everyone", "back from work", "hey {friend}",
                   "chat is fast today", "brb food"),
        "question": ("how long is stream today?", "what game is next?", "what's your setup?", "did you sleep?",
                     "when is the next collab?", "how many hours in this game?", "is this the new update?"),
        "request": ("can you play {game} next?", "pls say hi to my friend", "can you do the voice again",
                    "read my message pls", "please do a karaoke stream", "can we get a song"),
        "praise": ("love these streams", "you're the best", "best stream this week", "this made my day",
                   "thank you for streaming", "you're so good at this", "always here for you"),
    },
    "de": {
        "reaction": ("haha", "krass", "gg", "oha", "nice", "uff", "ehrenmann", "alter", "sehr gut"),
        "game": ("geh nach links", "nimm das schwert", "der boss ist schwach gegen feuer", "truhe vergessen"),
        "social": ("hallo chat", "jemand aus {place}?", "guten abend", "moin {friend}", "bin wieder da"),
        "question": ("wie lange geht der stream?", "was spielst du als nächstes?", "welches setup hast du?"),
        "request": ("kannst du {game} spielen?", "sag mal hallo zu meinem kumpel", "lies meine nachricht bitte"),
        "praise": ("beste streams", "du bist super", "danke fürs streamen", "richtig gut heute"),
    },
    "id": {
        "reaction": ("wkwkwk", "anjay", "gg", "mantap", "asli", "kocak", "gas", "waduh", "sabi"),
        "game": ("ke kiri bang", "ambil pedangnya", "bossnya lemah api", "petinya kelewat"),
        "social": ("halo chat", "ada yang dari {place}?", "selamat malam semua", "halo {friend}", "baru pulang"),
        "question": ("stream sampai jam berapa?", "habis ini main apa?", "setupnya apa bang?"),
        "request": ("main {game} dong", "salamin temenku dong", "bacain chat aku dong"),
        "praise": ("stream terbaik", "semangat terus", "makasih udah stream", "keren banget hari ini"),
    },
    "es": {
        "reaction": ("jajaja", "gg", "nooo", "que buena", "épico", "uff", "increíble", "xd"),
        "game": ("ve a la izquierda", "usa la otra arma", "el jefe es débil al fuego", "te faltó el cofre"),
        "social": ("hola chat", "alguien de {place}?", "buenas noches", "hola {friend}", "ya volví"),
        "question": ("cuánto dura el stream?", "qué juego sigue?", "cuál es tu setup?"),
        "request": ("juega {game} porfa", "saluda a mi amigo", "lee mi mensaje porfa"),
        "praise": ("amo estos streams", "eres el mejor", "gracias por el stream", "qué buen stream"),
    },
    "pt": {
        "reaction": ("kkkkk", "gg", "caramba", "que isso", "boa", "nossa", "top demais"),
        "game": ("vai pra esquerda", "usa a outra arma", "o chefe é fraco contra fogo", "esqueceu o baú"),
        "social": ("oi chat", "alguém de {place}?", "boa noite galera", "oi {friend}", "voltei"),
        "question": ("até que horas a live?", "qual o próximo jogo?", "qual teu setup?"),
        "request": ("joga {game} por favor", "manda um oi pro meu amigo", "lê minha mensagem"),
        "praise": ("amo essas lives", "você é demais", "obrigado pela live", "live incrível hoje"),
    },
}
PLACES = ("Berlin", "Jakarta", "Texas", "Madrid", "São Paulo", "Manila", "Toronto", "Sydney", "London")
PAID_TEMPLATES = {
    "en": ("love the stream {streamer}!", "for the snacks", "can you play {game} next?", "greetings from {place}",
           "thanks for always being here", "first superchat, love you {streamer}", "happy birthday!", ""),
    "de": ("danke für den stream {streamer}!", "für die snacks", "grüße aus {place}", "spiel mal {game}"),
    "id": ("semangat {streamer}!", "buat jajan bang", "salam dari {place}", "main {game} dong"),
    "es": ("gracias por el stream {streamer}!", "para los snacks", "saludos desde {place}", "juega {game}"),
    "pt": ("valeu pela live {streamer}!", "pro lanche", "abraço de {place}", "joga {game}"),
}
THANKS = ("thank you {name} for the {what}!", "omg {name} thank you so much", "{name} ty for the {what} ❤️")
CROWD_REACTIONS = ("W donation", "generous", "W {name}", "❤️", "letsgo")
NAME_SYLLABLES = ("ka", "ri", "to", "mi", "na", "shi", "ro", "lu", "ve", "an", "el", "jo", "dan", "fel", "gi",
                  "tor", "sa", "yu", "ben", "ria", "max", "leo", "zo", "pi", "ne", "ko", "ma", "ta")

BASE_START = datetime(2024, 3, 1, 18, 0, tzinfo=UTC)


@dataclass(frozen=True)
class TextSet:
    """Everything a preset's viewers and streamer can say."""

    templates: dict[str, dict[str, tuple[str, ...]]]
    paid: dict[str, tuple[str, ...]]
    games: tuple[str, ...]
    emoji: tuple[str, ...]
    thanks: tuple[str, ...]
    crowd: tuple[str, ...]
    places: tuple[str, ...]


TEXT_SETS = {
    "base": TextSet(TEMPLATES, PAID_TEMPLATES, GAMES, EMOJI, THANKS, CROWD_REACTIONS, PLACES),
    "shift": TextSet(shift_text.SHIFT_TEMPLATES, shift_text.SHIFT_PAID_TEMPLATES, shift_text.SHIFT_GAMES,
                     shift_text.SHIFT_EMOJI, shift_text.SHIFT_THANKS, shift_text.SHIFT_CROWD_REACTIONS,
                     shift_text.SHIFT_PLACES),
}
ID_ALPHABET = string.ascii_letters + string.digits + "-_"


# ---------------------------------------------------------------- ground truth

@dataclass(frozen=True)
class Donation:
    viewer_id: str
    message_id: str
    timestamp: datetime
    kind: MessageKind
    amount: float | None  # as the message carries it (gifts: the count, with currency XXX)
    currency: str | None
    usd: float  # value in USD (memberships at 4.99 each)


@dataclass
class Viewer:
    viewer_id: str
    name: str
    language: str
    rate_per_hour: float
    habit: float  # attendance weight
    generosity: float
    member_months: int  # 0 = not a member
    superfan: bool = False
    moderator: bool = False
    currency: str = "USD"


@dataclass
class SimulatedStream:
    stream_id: str
    channel_id: str
    title: str
    started_at: datetime
    items: list[dict[str, Any]]  # chat-downloader items, as `get_chat` yields them
    messages: list[ChatMessage]  # the same items through producers.readers' mapping
    donations: list[Donation]
    attendees: list[str] = field(default_factory=list)  # viewer ids present
    lurker_donors: frozenset[str] = frozenset()  # donors whose chat before paying looks ordinary
    superfans: frozenset[str] = frozenset()  # talk like donors, never pay (in this stream: present ones)
    # per attendee, the chat rate (messages/hour) the generator used before their first payment: the
    # latent fact behind the NULL preset's parity test (equal for donors and everyone else there)
    pre_payment_rates: dict[str, float] = field(default_factory=dict)

    @property
    def donor_ids(self) -> frozenset[str]:
        return frozenset(d.viewer_id for d in self.donations)

    def first_donation_time(self, viewer_id: str) -> datetime | None:
        times = [d.timestamp for d in self.donations if d.viewer_id == viewer_id]
        return min(times) if times else None


# ---------------------------------------------------------------- small random helpers

def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights=weights)[0]


def _channel_id(rng: random.Random) -> str:
    return "UC" + "".join(rng.choice(ID_ALPHABET) for _ in range(22))


def _name(rng: random.Random) -> str:
    core = "".join(rng.choice(NAME_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    suffix = rng.choice(("", "", str(rng.randint(1, 999)), "_" + rng.choice(NAME_SYLLABLES), "x"))
    name = core + suffix
    return "@" + name.lower() if rng.random() < 0.7 else name


def _typo(rng: random.Random, text: str) -> str:
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 3:
        return text
    i = rng.choice(letters[:-1])
    kind = rng.random()
    if kind < 0.4 and i + 1 < len(text):
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind < 0.7:
        return text[:i] + text[i + 1:]
    return text[:i] + text[i] + text[i:]


# ---------------------------------------------------------------- population

def _community(rng: random.Random, size: int, preset: SimPreset) -> list[Viewer]:
    viewers = []
    for index in range(size):
        language = _pick(rng, preset.languages)
        rate = min(120.0, max(0.3, math.exp(rng.gauss(math.log(6.0), 1.1))))
        member = rng.random() < (0.16 if rate > 6.0 else 0.05)
        viewers.append(Viewer(
            viewer_id=_channel_id(rng), name=_name(rng), language=language, rate_per_hour=rate,
            habit=rng.betavariate(2.0, 2.0), generosity=rng.betavariate(0.6, 6.0),
            member_months=rng.randint(1, 36) if member else 0, superfan=rng.random() < preset.superfan_share,
            moderator=index < 2, currency=_pick(rng, CURRENCY_BY_LANGUAGE[language]),
        ))
    return viewers


def _weighted_sample(rng: random.Random, population: list[Viewer], weights: list[float], k: int) -> list[Viewer]:
    """k distinct viewers, each draw proportional to weight (Efraimidis-Spirakis keys)."""
    keyed = sorted(((rng.random() ** (1.0 / max(w, 1e-9)), i) for i, w in enumerate(weights)), reverse=True)
    return [population[i] for _, i in keyed[:k]]


# ---------------------------------------------------------------- one stream

class _StreamBuilder:
    """Builds one stream's chat-downloader items; kept small by sharing state here."""

    def __init__(self, rng: random.Random, stream_id: str, channel_id: str, start: datetime, minutes: float,
                 preset: SimPreset) -> None:
        self.rng = rng
        self.preset = preset
        self.text = TEXT_SETS[preset.templates]
        # this stream's first-payment decile histogram (no draw when the preset has one: same seeds, same streams)
        self.timing = preset.payment_timing[0] if len(preset.payment_timing) == 1 else preset.draw_timing(rng)
        self.stream_id = stream_id
        self.channel_id = channel_id
        self.start = start
        self.duration = minutes * 60.0
        self.events: list[tuple[float, int, dict[str, Any]]] = []  # (offset s, tie-break, partial item)
        self.donations: list[tuple[Viewer, float, int]] = []  # (donor, usd, event index)
        self.joined: dict[str, float] = {}  # viewer id -> offset of a membership bought in this stream

    def add(self, offset: float, viewer: Viewer | None, message_type: str, **fields: Any) -> None:
        months = viewer.member_months if viewer else 0  # the badge as it was when this was said
        self.events.append((offset, len(self.events),
                            {"viewer": viewer, "message_type": message_type, "months": months, **fields}))

    # -- text

    def chat_text(self, viewer: Viewer, style: str, present: list[Viewer]) -> str:
        rng = self.rng
        preset, words = self.preset, self.text
        category = _pick(rng, preset.donor_style if style == "donor" else preset.normal_style)
        template = rng.choice(words.templates[viewer.language][category])
        friend = rng.choice(present).name.lstrip("@") if present else "chat"
        text = template.format(place=rng.choice(words.places), friend=friend, game=rng.choice(words.games))
        if rng.random() < preset.address_streamer[style == "donor"]:
            name = preset.streamer
            text = f"{rng.choice(('@', '', ''))}{name} {text}" if rng.random() < 0.6 else f"{text} {name}"
        if rng.random() < 0.25:
            text = f"{text} {rng.choice(words.emoji)}"
        if rng.random() < 0.05:
            text = f"{text} {rng.choice(GLOBAL_EMOTES)}"
        if viewer.member_months and rng.random() < 0.3:
            text = f"{text} {rng.choice(MEMBER_EMOTES)}"
        if rng.random() < preset.typo_rate:
            text = _typo(rng, text)
        return text

    # -- viewers

    def presence(self, viewer: Viewer) -> tuple[float, float]:
        rng = self.rng
        early = rng.random() < self.preset.early_arrival_share
        arrive = rng.uniform(0, 0.1 * self.duration) if early else rng.uniform(0, self.duration)
        stay = rng.expovariate(1.0 / (0.6 * self.duration))
        return arrive, min(self.duration, arrive + max(stay, 60.0))

    def chatter(self, viewer: Viewer, window: tuple[float, float], style_until: float, present: list[Viewer],
                boost: float = 1.0) -> None:
        """Poisson chat over the window; donor style (if any) until `style_until`."""
        rng = self.rng
        rate = viewer.rate_per_hour / 3600.0
        t = window[0]
        while True:
            current = rate * (boost if t < style_until else 1.0)
            t += rng.expovariate(current)
            if t >= window[1]:
                return
            style = "donor" if (t < style_until or viewer.superfan) else "normal"
            self.add(t, viewer, "text_message", message=self.chat_text(viewer, style, present))

    def pre_donation_burst(self, viewer: Viewer, first_payment: float, present: list[Viewer]) -> None:
        for _ in range(self.rng.randint(*self.preset.burst)):
            t = first_payment - min(600.0, self.rng.expovariate(1 / 180.0))
            if t > 0:
                self.add(t, viewer, "text_message", message=self.chat_text(viewer, "donor", present))

    # -- payments

    def payment_times(self, within: tuple[float, float] | None = None) -> list[float]:
        """First payment from this stream's decile histogram (or uniform inside `within`), then repeats."""
        rng = self.rng
        if within is None:
            decile = rng.choices(range(10), weights=self.timing)[0]
            first = (decile + rng.random()) / 10 * self.duration
        else:
            first = rng.uniform(*within)
        count = rng.choices([c for c, _ in PAYMENTS_PER_DONOR], weights=[w for _, w in PAYMENTS_PER_DONOR])[0]
        times = [first]
        mean_gap = REPEAT_GAP_MEDIAN_MIN * 60 / math.log(2)
        for _ in range(count - 1):
            nxt = times[-1] + rng.expovariate(1 / mean_gap)
            if nxt >= self.duration:
                break
            times.append(nxt)
        return times

    def payment(self, viewer: Viewer, offset: float, present: list[Viewer]) -> None:
        rng = self.rng
        kind = _pick(rng, KIND_SHARES)
        if kind == "new_member" and viewer.member_months:
            kind = "paid_message"
        symbol, points, decimals = PRICE_POINTS[viewer.currency]
        if kind in ("paid_message", "paid_sticker"):
            tier = rng.choices(range(len(USD_TIERS)), weights=USD_TIER_SHARES)[0]
            amount = float(points[tier])
            if decimals and amount >= 1 and rng.random() < 0.45:
                amount = round(amount - 0.01, 2)  # "$4.99" is as common as "$5.00"
            text = f"{symbol}{amount:,.{decimals}f}"
            usd = USD_TIERS[tier] * (amount / points[tier])
            words = self.text
            message = rng.choice(words.paid[viewer.language]).format(
                streamer=self.preset.streamer, place=rng.choice(words.places), game=rng.choice(words.games),
            ) if kind == "paid_message" else None
            self.add(offset, viewer, kind, message=message or None,
                     money={"amount": amount, "currency": viewer.currency, "currency_symbol": symbol.strip(),
                            "text": text})
            what = "superchat" if kind == "paid_message" else "sticker"
        elif kind == "gift":
            count = _pick(rng, GIFT_COUNTS)
            self.add(offset, viewer, "sponsorships_gift_purchase_announcement",
                     message=f"Gifted {count} {self.preset.club} membership{'s' if count > 1 else ''}")
            usd, what = count * MEMBERSHIP_USD, "gifts"
        else:
            self.add(offset, viewer, "membership_item", message=None, header_secondary_text=f"Welcome to {self.preset.club}!")
            usd, what = MEMBERSHIP_USD, "membership"
            self.joined[viewer.viewer_id] = offset
            viewer.member_months = 1  # a member from now on, in this and later streams
        self.donations.append((viewer, usd, len(self.events) - 1))
        thanks_at = offset + rng.uniform(20, 120)
        if thanks_at < self.duration:
            self.add(thanks_at, None, "owner", message=rng.choice(self.text.thanks).format(name=viewer.name.lstrip("@"), what=what))
        for other in rng.sample(present, k=min(len(present), rng.randint(0, 2))):
            at = offset + rng.uniform(2, 30)
            if at < self.duration and other is not viewer:
                self.add(at, other, "text_message", message=rng.choice(self.text.crowd).format(name=viewer.name.lstrip("@")))

    # -- items

    def items(self, owner_name: str) -> tuple[list[dict[str, Any]], dict[int, str]]:
        """chat-downloader items in time order, and event index -> message id."""
        from chat_downloader.utils.core import seconds_to_time

        start_us = int(self.start.timestamp()) * 1_000_000
        ordered = sorted(self.events, key=lambda e: (e[0], e[1]))
        items, ids = [], {}
        for n, (offset, index, event) in enumerate(ordered):
            offset = round(offset, 3)
            message_id = f"{self.stream_id}.{n:05d}"
            ids[index] = message_id
            viewer: Viewer | None = event["viewer"]
            if viewer is None:
                author = {"id": self.channel_id, "name": owner_name,
                          "badges": [{"title": "Owner", "icon_name": "owner"}]}
            else:
                author = {"id": viewer.viewer_id, "name": viewer.name}
                badges = []
                if viewer.moderator:
                    badges.append({"title": "Moderator", "icon_name": "moderator"})
                months = event["months"]
                if offset >= self.joined.get(viewer.viewer_id, math.inf):
                    months = max(months, 1)
                if months:
                    title = "New member" if months <= 1 else f"Member ({months} months)"
                    badges.append({"title": title, "icons": [{"url": "https://yt3.ggpht.com/sim=s16-c-k",
                                                              "id": "16x16", "width": 16, "height": 16}]})
                if badges:
                    author["badges"] = badges
            item: dict[str, Any] = {
                "action_type": "add_chat_item", "author": author, "message": event.get("message"),
                "message_id": message_id,
                "message_type": "text_message" if event["message_type"] == "owner" else event["message_type"],
                "time_in_seconds": offset, "time_text": seconds_to_time(int(offset)),
                "timestamp": start_us + round(offset * 1_000_000),
            }
            for key in ("money", "header_secondary_text"):
                if key in event:
                    item[key] = event[key]
            items.append(item)
        return items, ids


def _simulate_stream(rng: random.Random, index: int, community: list[Viewer], past_donors: dict[str, Viewer], *,
                     channel_id: str, start: datetime, viewers: int, minutes: float, donor_share: float,
                     preset: SimPreset) -> SimulatedStream:
    from producers.readers.chat_downloader import item_to_message

    stream_id = "sim" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(8))
    builder = _StreamBuilder(rng, stream_id, channel_id, start, minutes, preset)
    present = _weighted_sample(rng, community, [v.habit for v in community], min(viewers, len(community)))
    windows = {v.viewer_id: builder.presence(v) for v in present}

    n_donors = max(1, round(donor_share * len(present)))
    donors: list[Viewer] = []
    returning = [v for v in present if v.viewer_id in past_donors]
    fresh = [v for v in present if v.viewer_id not in past_donors]
    for _ in range(n_donors):
        if preset.neutral_donors:  # null: who paid before, and how generous, says nothing
            pool = [v for v in present if v not in donors]
            donors.append(rng.choice(pool))
            continue
        pool = returning if returning and (not fresh or rng.random() < REPEAT_DONOR_PROBABILITY) else fresh
        if not pool:
            break
        chosen = _weighted_sample(rng, pool, [v.generosity for v in pool], 1)[0]
        pool.remove(chosen)
        donors.append(chosen)
    donor_ids = {d.viewer_id for d in donors}
    lurkers = {d.viewer_id for d in donors if rng.random() < preset.lurker_donor_share}

    rates = {v.viewer_id: v.rate_per_hour for v in present}
    for viewer in present:
        window = windows[viewer.viewer_id]
        if viewer.viewer_id not in donor_ids:
            builder.chatter(viewer, window, style_until=0.0, present=present)
            continue
        if preset.neutral_donors:  # null: ordinary presence untouched, the payment right after it
            times = builder.payment_times(within=(window[1], window[1]))
        else:
            times = builder.payment_times()
            arrive = min(window[0], max(0.0, times[0] - rng.expovariate(1 / 900.0)))  # there before paying
            window = (arrive, min(max(window[1], times[-1] + 60.0), builder.duration))
        if viewer.viewer_id in lurkers or not preset.has_donor_signal:
            builder.chatter(viewer, window, style_until=0.0, present=present)
        else:
            builder.chatter(viewer, window, style_until=times[0], present=present, boost=preset.donor_rate_boost)
            rates[viewer.viewer_id] *= preset.donor_rate_boost
            builder.pre_donation_burst(viewer, times[0], present)
        for t in times:
            builder.payment(viewer, t, present)
    for t in sorted(rng.uniform(0, builder.duration) for _ in range(max(2, int(minutes / 10)))):
        builder.add(t, None, "owner", message=rng.choice(("hi chat!", "welcome everyone", "let's go", "one sec",
                                                          "thanks for coming")))

    items, ids = builder.items(owner_name=preset.streamer)
    messages = [m for m in (item_to_message(item, stream_id=stream_id) for item in items) if m is not None]
    by_id = {m.message_id: m for m in messages}
    donations = []
    for viewer, usd, event_index in builder.donations:
        message = by_id[ids[event_index]]
        donations.append(Donation(viewer_id=viewer.viewer_id, message_id=message.message_id,
                                  timestamp=message.timestamp, kind=message.kind, amount=message.amount,
                                  currency=message.currency, usd=round(usd, 2)))
        past_donors[viewer.viewer_id] = viewer
    donations.sort(key=lambda d: d.timestamp)
    present_ids = [v.viewer_id for v in present]
    return SimulatedStream(
        stream_id=stream_id, channel_id=channel_id, title=f"{preset.streamer} plays {rng.choice(builder.text.games)} #{index + 1}",
        started_at=start, items=items, messages=messages, donations=donations, attendees=present_ids,
        lurker_donors=frozenset(lurkers), superfans=frozenset(v.viewer_id for v in present if v.superfan),
        pre_payment_rates=rates,
    )


def simulate(n_streams: int, seed: int, *, preset: str | SimPreset = "classic", viewers: int | None = None,
             minutes: float | None = None, donor_share: float | None = None) -> list[SimulatedStream]:
    """N streams of one channel (same community, repeat donors), deterministic for a seed and preset.
    `viewers`, `minutes` and `donor_share` fix a value the preset would otherwise draw per stream."""
    spec = preset if isinstance(preset, SimPreset) else preset_named(preset)
    if n_streams < 1 or (viewers is not None and viewers < 2) or (minutes is not None and minutes <= 0) \
            or (donor_share is not None and not 0 < donor_share < 0.5):
        raise ValueError("need n_streams >= 1, viewers >= 2, minutes > 0 and 0 < donor_share < 0.5")
    rng = random.Random(f"donorcast-sim-{seed}" if spec.name == "classic" else f"donorcast-sim-{spec.name}-{seed}")
    channel_id = _channel_id(rng)
    largest = viewers if viewers is not None else spec.viewers[1]
    community = _community(rng, max(largest + 1, int(largest * 1.5)), spec)
    past_donors: dict[str, Viewer] = {}
    first = BASE_START + timedelta(days=3 * (seed % 100))
    streams = []
    for index in range(n_streams):
        start = first + timedelta(days=2 * index, minutes=rng.randint(0, 120))
        stream_rng = random.Random(f"donorcast-sim-{seed}-{index}" if spec.name == "classic"
                                   else f"donorcast-sim-{spec.name}-{seed}-{index}")
        streams.append(_simulate_stream(
            stream_rng, index, community, past_donors, channel_id=channel_id, start=start,
            viewers=viewers if viewers is not None else spec.draw_viewers(stream_rng),
            minutes=minutes if minutes is not None else spec.draw_minutes(stream_rng),
            donor_share=donor_share if donor_share is not None else spec.draw_donor_share(stream_rng), preset=spec))
    return streams


# ---------------------------------------------------------------- files

def write_chat_downloader_json(stream: SimulatedStream, path: Path) -> Path:
    """The stream's items exactly as `chat_downloader --output path` writes them (.json or .jsonl)."""
    from chat_downloader.output.continuous_write import ContinuousWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ContinuousWriter(str(path), indent=4, sort_keys=True, overwrite=True)
    try:
        for item in stream.items:
            writer.write(item)
    finally:
        writer.close()
    return path


def ground_truth(streams: list[SimulatedStream]) -> dict[str, Any]:
    return {
        s.stream_id: {
            "channel_id": s.channel_id, "title": s.title, "started_at": s.started_at.isoformat(),
            "donors": sorted(s.donor_ids), "lurker_donors": sorted(s.lurker_donors), "superfans": sorted(s.superfans),
            "donations": [{"viewer_id": d.viewer_id, "message_id": d.message_id, "timestamp": d.timestamp.isoformat(),
                           "kind": d.kind.value, "amount": d.amount, "currency": d.currency, "usd": d.usd}
                          for d in s.donations],
        }
        for s in streams
    }


def write_ground_truth(streams: list[SimulatedStream], out: Path) -> Path:
    """OUT/truth/ground_truth.json: a folder of its own, so `fit OUT/*.json` reads chat files only."""
    path = out / "truth" / "ground_truth.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ground_truth(streams), indent=2), encoding="utf-8")
    return path


def simulate_command(
    ctx: typer.Context,
    streams: Annotated[int, typer.Option(min=1, help="number of streams (one channel)")] = 3,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives the same streams")] = 0,
    out: Annotated[Path, typer.Option(help="folder for <stream_id>.json (chat-downloader format); the truth goes "
                                           "to OUT/truth/ground_truth.json, where no *.json glob of chat files sees it")]
    = Path("simulated"),
    preset: Annotated[str, typer.Option(help=f"generator preset: {', '.join(PRESETS)} (producers/sim_presets.py)")]
    = "mixed",
    viewers: Annotated[int | None, typer.Option(min=2, help="viewers present per stream (default: the preset's range)")]
    = None,
    minutes: Annotated[float | None, typer.Option(min=1, help="stream length (default: the preset's range)")] = None,
    donor_share: Annotated[float | None, typer.Option(help="share of viewers who pay (default: the preset's range)")]
    = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka", help="also publish the streams to chat-messages")] = False,
    speed: Annotated[str, typer.Option(help="with --to-kafka: 1, 10, ... or max")] = "max",
) -> None:
    """Simulate streams with ground-truth donors and write them as chat-downloader JSON."""
    import time

    from rich.console import Console
    from rich.table import Table

    started = time.perf_counter()
    try:
        simulated = simulate(streams, seed, preset=preset, viewers=viewers, minutes=minutes, donor_share=donor_share)
    except ValueError as error:
        from infra.errors import InputError

        raise InputError(str(error)) from None
    for stream in simulated:
        write_chat_downloader_json(stream, out / f"{stream.stream_id}.json")
    truth = write_ground_truth(simulated, out)
    table = Table("stream", "start", "messages", "viewers", "donors", "payments", "USD", title=f"simulated (seed {seed})")
    for s in simulated:
        table.add_row(s.stream_id, s.started_at.strftime("%Y-%m-%d %H:%M"), f"{len(s.messages):,}",
                      f"{len({m.viewer_id for m in s.messages}):,}", str(len(s.donor_ids)), str(len(s.donations)),
                      f"{sum(d.usd for d in s.donations):,.2f}")
    console = Console()
    console.print(table)
    console.print(f"wrote {len(simulated)} chat files to {out}/ and the truth to {truth} "
                  f"in {time.perf_counter() - started:.1f} s (preset {preset})")
    if to_kafka:
        from infra.cli import settings_from
        from producers.replay import publish_simulated

        summary = publish_simulated(simulated, settings_from(ctx), speed=speed)
        console.print(summary.describe())

