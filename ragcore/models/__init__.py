"""Models: the ONNX sentence encoder and language-model generator runtimes (onnxruntime), their exports,
the ONNX graph writer and the decoding rules. Knows nothing of retrieval.

The public names are re-exported at the top (``import ragcore as rc; rc.BM25``).
"""
