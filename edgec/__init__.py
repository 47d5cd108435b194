"""edgec: compiles ONNX models for edge devices through Apache TVM.

    import edgec
    result = edgec.compile("model.onnx", target="x86-64", output="model.edgec")
    outputs = edgec.load("model.edgec").run({"input": array})

One function per command (compile, quantize, tune, analyze, check, bench; see edgec/api.py)
and the runtime's load. They are exported lazily: ``edgec.load`` never imports the compiler.
"""

__version__ = "0.1.0"

LAZY = {
    **dict.fromkeys(("compile", "quantize", "tune", "analyze", "check", "bench"), "edgec.api"),
    "load": "edgec.runtime",
}
"""Public name -> the module that defines it, imported on first use."""

__all__ = ["__version__", *LAZY]


def __getattr__(name: str):
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'edgec' has no attribute {name!r}")
