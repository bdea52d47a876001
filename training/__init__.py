"""Offline jobs: MLM domain pretraining, leak-free datasets, classifier fitting, evaluation, ONNX export."""
