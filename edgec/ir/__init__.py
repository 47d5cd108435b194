"""edgec's graph IR: the data structures, a text form that round-trips, and a verifier."""

from .core import DTYPES, Attr, Dim, Graph, Model, Node, Value, dtype_of_array, numpy_dtype
from .parser import ParseError, parse_model
from .printer import format_node, print_model
from .verifier import VerificationError, verify

__all__ = [
    "DTYPES", "Attr", "Dim", "Graph", "Model", "Node", "Value", "dtype_of_array", "numpy_dtype",
    "ParseError", "parse_model", "format_node", "print_model", "VerificationError", "verify",
]
