"""What edgec tells about a model: the per-layer report, ``edgec analyze`` before any TVM
work, and checks against onnxruntime with latency measurement."""
