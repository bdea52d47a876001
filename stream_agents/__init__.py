"""Kafka -> scores: the faust-streaming app that embeds messages, keeps per-viewer sequences and scores them."""
