"""Check an exported segcam model with the ONNX reference tools.

Usage: check_onnx.py MODEL.onnx DIR

Runs onnx.checker (full check, with shape inference), checks the opset and the
model card in metadata_props, then runs onnxruntime (CPU) on DIR/inputs.safetensors
("x": N×3×H×W float32, one image at a time) and writes the logits, stacked, to
DIR/onnxruntime.safetensors ("logits").
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file, save_file


def main(model_path, folder):
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13, f"opset {opset} < 13"
    props = {p.key: p.value for p in model.metadata_props}
    card = json.loads(props["segcam.model_card"])
    assert card["format_version"] == 1, card["format_version"]

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert inp.name == card["input_name"], (inp.name, card["input_name"])
    assert out.name == card["output_name"], (out.name, card["output_name"])
    assert inp.shape == [1, 3, card["input_height"], card["input_width"]], inp.shape

    x = load_file(f"{folder}/inputs.safetensors")["x"]
    logits = [session.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))]
    logits = np.concatenate(logits).astype(np.float32)
    save_file({"logits": logits}, f"{folder}/onnxruntime.safetensors")
    print(f"checker ok, opset {opset}, {len(card['classes']['names'])} classes, "
          f"onnxruntime logits {logits.shape}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
