"""edgec as an ONNX backend, and ONNX's node conformance cases it is judged on."""
