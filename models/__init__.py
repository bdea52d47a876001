"""Model code only (no Kafka, no database): encoder wrapper, time encoding, CLS classifier, ONNX scorers, registry."""
