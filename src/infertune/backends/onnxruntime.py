"""onnxruntime backend: to be written."""
