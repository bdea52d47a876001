"""Sources -> Kafka: chat readers (one class per source), archive collection, live/replay publishers, simulator."""
