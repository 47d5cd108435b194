"""The ONNX front end: untrusted ONNX checked, imported into edgec's IR, and exported back."""
