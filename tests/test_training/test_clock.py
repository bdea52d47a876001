"""The model's time inputs carry behaviour (recency, gaps), not the stream's clock."""

from __future__ import annotations

import numpy as np

from models.scorer import FeatureConfig, sequence_input


def test_recency_inputs_do_not_depend_on_when_in_the_stream_a_viewer_chats() -> None:
    """The same burst of chat 5 minutes or 4 hours into a stream gives the same model input."""
    config = FeatureConfig()
    times = np.asarray([0.0, 40.0, 55.0, 300.0])
    texts = ["hi", "how long is stream?", "love it", "W"]
    early, late = (sequence_input(np.ones((4, 3), dtype=np.float32), list(times + offset), texts=texts,
                                  message_numbers=range(1, 5), config=config, previous_seconds=offset - 600.0)
                   for offset in (300.0, 4 * 3600.0))
    np.testing.assert_array_equal(early.seconds_since_start, late.seconds_since_start)
    np.testing.assert_array_equal(early.seconds_since_prev, late.seconds_since_prev)
    np.testing.assert_array_equal(early.seconds_since_start, [300.0, 260.0, 245.0, 0.0])  # seconds before the newest


def test_versions_without_a_clock_setting_keep_the_stream_clock() -> None:
    legacy = FeatureConfig.from_dict({"label": "paid", "max_messages": 32})
    assert legacy.clock == "stream"
    seq = sequence_input(np.ones((2, 3), dtype=np.float32), [100.0, 160.0], texts=["a", "b"],
                         message_numbers=[1, 2], config=legacy)
    np.testing.assert_array_equal(seq.seconds_since_start, [100.0, 160.0])
