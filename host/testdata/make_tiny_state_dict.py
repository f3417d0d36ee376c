"""Regenerate tiny_state_dict.pth, the fixture for host/src/pth.rs's tests.

Run with any recent PyTorch (made with 2.13.0):
    python host/testdata/make_tiny_state_dict.py
The Rust tests assert the exact values below, so change both together.
"""
from collections import OrderedDict
from pathlib import Path

import torch

base = torch.arange(6, dtype=torch.float32).reshape(2, 3)  # [[0,1,2],[3,4,5]]
long_row = torch.arange(10, dtype=torch.float32) * 0.5

sd = OrderedDict()
sd["conv.weight"] = torch.arange(54, dtype=torch.float32).reshape(2, 3, 3, 3) / 8
sd["conv.bias"] = torch.tensor([-1.5, 2.25])
sd["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
# Views share one storage in the saved file: 'a' and 'b' (its transpose, strides
# (1, 3)) point at the same bytes, and 'c' starts at storage offset 3.
sd["a"] = base
sd["b"] = base.t()
sd["c"] = long_row[3:7]
# 2**-24 is float16's smallest subnormal.
sd["half"] = torch.tensor(
    [1.0, -2.5, 0.333251953125, 65504.0, 2.0**-24, float("-inf")], dtype=torch.float16
)
sd["bf16"] = torch.tensor([1.0, -3.0, 0.1], dtype=torch.bfloat16)  # 0.1 -> 0.10009765625
sd["f64"] = torch.tensor([0.1, -2.0], dtype=torch.float64)
sd["i32"] = torch.tensor([[-7, 2147483647]], dtype=torch.int32)
sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
sd["empty"] = torch.zeros(0, 3)
# keep_vars=True state dicts hold Parameters, pickled via _rebuild_parameter.
sd["param"] = torch.nn.Parameter(torch.tensor([3.5, -0.25]))

out = Path(__file__).with_name("tiny_state_dict.pth")
torch.save(sd, out)
print(f"wrote {out} ({out.stat().st_size} bytes)")
