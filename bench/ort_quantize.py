"""onnxruntime's own quantizer on a segcam model: the anchor `just bench` and the
quantize test compare ours against.

    python bench/ort_quantize.py F32_MODEL CALIB N OUT [qdq|qoperator]

Calibrates with `quantize_static` on the same N images `seg-host quantize` takes (the
VOC 'train' split of CALIB spread evenly, or CALIB's image files; each covered to the
model's input size and centre-cropped, then normalised as the model card says), with
uint8 activations and int8 per-channel weights (onnxruntime's recommended x86/ARM
setting; MinMax calibration, its default). The model card of F32_MODEL is copied into
OUT with precision int8, so that `seg-host eval --model OUT` can evaluate it.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

KEY = "segcam.model_card"


def calibration_paths(root, count):
    split = os.path.join(root, "ImageSets/Segmentation/train.txt")
    if os.path.isfile(split):
        ids = [l.strip() for l in open(split) if l.strip()]
        paths = [os.path.join(root, "JPEGImages", i + ".jpg") for i in ids]
    else:
        exts = (".jpg", ".jpeg", ".png", ".bmp")
        paths = sorted(os.path.join(root, f) for f in os.listdir(root) if f.lower().endswith(exts))
    n = min(count, len(paths))
    return [paths[i * len(paths) // n] for i in range(n)]


def cover(img, w, h):
    scale = max(w / img.width, h / img.height)
    if scale > 1.0:
        import math
        img = img.resize((max(w, math.ceil(img.width * scale)), max(h, math.ceil(img.height * scale))),
                         Image.BILINEAR)
    x, y = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((x, y, x + w, y + h))


class Reader(CalibrationDataReader):
    def __init__(self, paths, card):
        self.paths = iter(paths)
        self.card = card
        norm = card["normalization"]
        self.mean = np.array(norm["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.array(norm["std"], np.float32).reshape(3, 1, 1)

    def get_next(self):
        path = next(self.paths, None)
        if path is None:
            return None
        w, h = self.card["input_width"], self.card["input_height"]
        img = cover(Image.open(path).convert("RGB"), w, h)
        x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
        x = (x - self.mean) / self.std
        return {self.card["input_name"]: x[None].astype(np.float32)}


def main():
    model, calib, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    form = sys.argv[5] if len(sys.argv) > 5 else "qdq"
    proto = onnx.load(model)
    card = json.loads(next(p.value for p in proto.metadata_props if p.key == KEY))
    pre = out + ".pre.onnx"
    quant_pre_process(model, pre, skip_symbolic_shape=True)
    quantize_static(pre, out, Reader(calibration_paths(calib, count), card),
                    quant_format=QuantFormat.QDQ if form == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    os.remove(pre)
    q = onnx.load(out)
    card["precision"] = "int8"
    card["name"] = card["name"] + " (onnxruntime quantize_static)"
    card["engine"] = "onnxruntime"
    card["export_validation"] = None
    card["quantization"] = {"calibration": "onnxruntime-minmax", "calibration_images": count,
                            "f32_validation": None, "format": "qdq" if form == "qdq" else "qlinear"}
    del q.metadata_props[:]
    entry = q.metadata_props.add()
    entry.key, entry.value = KEY, json.dumps(card)
    onnx.save(q, out)


if __name__ == "__main__":
    main()
