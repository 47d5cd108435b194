"""Quantization around the quantize pass: calibration data, the accuracy budget and the
per-layer quantization report."""
