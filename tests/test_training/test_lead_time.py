"""Lead time: the board replayed in time order, payers caught only before they pay."""

from __future__ import annotations

import math

from tests.test_training.test_fit_support import fitted, shared_cache
from training.embeddings import EmbeddingCache
from training.lead_time import BoardEvent, StreamLeads, first_top_k, lead_times, stream_leads, summarise


def test_a_viewer_enters_the_top_k_when_their_score_or_the_board_puts_them_there() -> None:
    events = [BoardEvent(0, "a", 0.9), BoardEvent(10, "b", 0.8), BoardEvent(20, "c", 0.7),
              BoardEvent(30, "a", 0.1),  # a falls: c moves up into the top 2 without a message of its own
              BoardEvent(40, "d", 0.95)]
    entered = first_top_k(events, k=2)
    assert entered == {"a": 0, "b": 10, "c": 30, "d": 40}


def test_ties_go_to_whoever_joined_first() -> None:
    events = [BoardEvent(0, "a", 1.0), BoardEvent(1, "b", 1.0), BoardEvent(2, "c", 1.0)]
    assert first_top_k(events, k=2) == {"a": 0, "b": 1}


def test_only_an_entry_before_the_payment_is_a_lead() -> None:
    events = [BoardEvent(0, "early", 0.9), BoardEvent(5, "filler", 0.8), BoardEvent(10, "late", 0.1),
              BoardEvent(400, "late", 0.99)]  # late reaches the top only after paying at 300
    leads = stream_leads("s", events, {"early": 240.0, "late": 300.0}, k=2)
    assert leads.payers == 2 and leads.leads_minutes == [4.0]


def test_summary_counts_caught_payers_and_takes_the_median() -> None:
    streams = [StreamLeads("s1", payers=3, leads_minutes=[1.0, 5.0]), StreamLeads("s2", payers=1, leads_minutes=[9.0]),
               StreamLeads("s3", payers=0)]
    summary = summarise(streams, rounds=200)
    assert summary["payers"] == 4 and summary["caught"] == 3 and summary["caught_share"] == 0.75
    assert summary["median_lead_minutes"] == 5.0
    assert summary["median_ci_low"] <= 5.0 <= summary["median_ci_high"]
    assert math.isnan(summarise([StreamLeads("s", payers=2)])["median_lead_minutes"])


def test_lead_times_of_a_fitted_model_on_simulated_streams() -> None:
    """Through the live path (each-message scores): every payer is accounted for, leads are positive
    and no longer than the stream, and the model's board is compared with message count's."""
    from models.scorer import DonorScorer

    _, results, streams = fitted()
    version = results.tracks["chat"].version
    scorer = DonorScorer.load(version, threads=1)
    cache = EmbeddingCache(shared_cache(), version.manifest.get("encoder_key", version.version))
    found = lead_times(streams[:3], scorer, cache=cache, k=10)
    assert set(found) == {"model", "message count"}
    for board in found.values():
        assert [s.stream_id for s in board] == [s.stream_id for s in streams[:3]]
        for leads, stream in zip(board, streams[:3], strict=True):
            payers = {m.viewer_id for m in stream.messages if m.is_paid}
            minutes = (stream.messages[-1].timestamp - stream.messages[0].timestamp).total_seconds() / 60
            assert leads.payers == len(payers) > 0
            assert len(leads.leads_minutes) <= leads.payers
            assert all(0 < lead <= minutes for lead in leads.leads_minutes)
    assert sum(len(s.leads_minutes) for s in found["model"]) > 0
