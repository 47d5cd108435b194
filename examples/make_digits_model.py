"""Train the bundled example: a small MLP on scikit-learn's digits, written as ONNX.

Run from the repo root to regenerate ``examples/digits_mlp.onnx`` and
``examples/digits_sample.npz`` (needs scikit-learn, a development-only dependency):

    python examples/make_digits_model.py

The weights are written with onnx.helper directly (Gemm + Relu), so no converter
package is needed. The sample holds one held-out image per class and its labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).parent


def main() -> None:
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)  # pixel values 0..16 scaled to 0..1
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=0.25, random_state=0)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=600, random_state=0).fit(x_train, y_train)
    print(f"held-out accuracy: {mlp.score(x_test, y_test):.3f}")

    nodes, inits, current = [], [], "image"
    for layer, (weight, bias) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        inits += [numpy_helper.from_array(weight.T.astype(np.float32), f"fc{layer}.weight"),
                  numpy_helper.from_array(bias.astype(np.float32), f"fc{layer}.bias")]
        out = "logits" if layer == len(mlp.coefs_) - 1 else f"fc{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"fc{layer}.weight", f"fc{layer}.bias"], [out], transB=1, name=f"fc{layer}"))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"relu{layer}"], name=f"relu{layer}"))
            current = f"relu{layer}"
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [10, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [10, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgec-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, HERE / "digits_mlp.onnx")

    picks = [int(np.flatnonzero(y_test == digit)[0]) for digit in range(10)]
    np.savez(HERE / "digits_sample.npz", image=x_test[picks])
    np.save(HERE / "digits_labels.npy", y_test[picks])


if __name__ == "__main__":
    main()
