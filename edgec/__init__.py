"""edgec: compiles ONNX models for edge devices through Apache TVM."""

__version__ = "0.1.0"
