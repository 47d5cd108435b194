"""The ONNX front end: untrusted ONNX checked, imported into edgec's IR, exported back, and
run by onnxruntime as the reference."""
