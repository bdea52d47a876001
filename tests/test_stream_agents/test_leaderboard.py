"""The per-stream rank index derived from the viewer headers."""

from __future__ import annotations

from stream_agents.leaderboard import Leaderboards
from stream_agents.sequences import ViewerSequence


def header(p: float | None, *, count: int = 1, paid: int = 0, rank_before_paid: int | None = None,
           last_time: float = 100.0, origin: float = 10.0) -> ViewerSequence:
    return ViewerSequence(capacity=4, count=count, probability=p, paid_events=paid, last_time=last_time,
                          rank_before_paid=rank_before_paid, origin=origin, updated_at=1.0)


def test_ranks_follow_probability_and_move_with_updates() -> None:
    boards = Leaderboards()
    boards.update("s|a", header(0.2))
    boards.update("s|b", header(0.9))
    boards.update("s|c", header(0.5))
    boards.update("t|a", header(0.99))  # another stream ranks separately
    assert [boards.rank(k) for k in ("s|a", "s|b", "s|c", "t|a")] == [3, 1, 2, 1]
    boards.update("s|a", header(0.95))
    assert [boards.rank(k) for k in ("s|a", "s|b", "s|c")] == [1, 2, 3]
    assert [e.viewer_id for e in boards.streams["s"].top(2)] == ["a", "b"]
    boards.remove("s|b")
    assert boards.rank("s|c") == 2 and boards.rank("s|b") is None


def test_ties_break_by_viewer_id_and_unscored_viewers_have_no_rank() -> None:
    boards = Leaderboards()
    for viewer in ("c", "a", "b"):
        boards.update(f"s|{viewer}", header(0.5))
    boards.update("s|paid-only", header(None, count=0, paid=1))
    assert [boards.rank(f"s|{v}") for v in "abc"] == [1, 2, 3]
    assert boards.rank("s|paid-only") is None and len(boards.streams["s"]) == 4


def test_precision_and_hit_rate_at_k() -> None:
    boards = Leaderboards()
    boards.update("s|a", header(0.9, paid=1, rank_before_paid=1))
    boards.update("s|b", header(0.8))
    boards.update("s|c", header(0.1, paid=1, rank_before_paid=7))
    board = boards.streams["s"]
    assert board.precision_at(2) == 0.5
    assert board.hit_rate_at(5) == 0.5
    assert board.hit_rate_at(10) == 1.0


def test_rebuild_recreates_the_same_index_and_the_stream_origin() -> None:
    live = Leaderboards()
    headers = [("s|a", header(0.3, origin=20.0)), ("s|b", header(0.7, origin=10.0)), ("u|x", header(0.1))]
    for key, h in headers:
        live.update(key, h)
    rebuilt = Leaderboards()
    assert rebuilt.stale
    rebuilt.rebuild(headers)
    assert not rebuilt.stale
    assert [rebuilt.rank(k) for k, _ in headers] == [live.rank(k) for k, _ in headers] == [2, 1, 1]
    assert rebuilt.origin("s") == 10.0 and rebuilt.streams["s"].clock == 100.0
