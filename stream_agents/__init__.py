"""Kafka -> scores: the faust-streaming app that embeds messages, keeps per-viewer sequences and scores them.

The modules, in the order a chat record meets them:

- `app.py`: the faust app, its topics and changelog-backed tables, the shared `Runtime`;
- `agents.py`: the agents and timers (one micro-batch of chat-messages at a time);
- `validate.py`: raw records -> typed events, sorted into inputs, paid outcomes, notices, dead letters;
- `pipeline.py`: what one micro-batch goes through, step by step (embed, append, score, mark applied);
- `sequences.py`: the per-viewer rolling windows and their two tables;
- `score.py`: the promoted model (loaded, hot-swapped, run on its own thread) and scoring;
- `leaderboard.py`: per-stream ranks, and paid events recorded as outcomes;
- `persist.py`: PostgreSQL: the sink for both topics, and viewer-history reads;
- `metrics.py`: the counters (Prometheus text and a JSON summary);
- `views.py`: the worker's HTTP routes;
- `recovery/`: the embedded broker's gap and reset handling, off on a real Kafka cluster.
"""
