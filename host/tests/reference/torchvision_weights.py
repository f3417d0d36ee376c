"""Write torchvision's ResNet-18 state dict (random weights: no download) the way
torchvision ships it (`torch.save` → .pth) and as safetensors, into the given folder."""
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

folder = Path(sys.argv[1])
torch.manual_seed(0)
state = torchvision.models.resnet18(weights=None).state_dict()
# Distinct running statistics, so a loader that skipped them would be caught.
for k, v in state.items():
    if k.endswith("running_mean"):
        v.copy_(torch.randn_like(v))
    elif k.endswith("running_var"):
        v.copy_(torch.rand_like(v) + 0.5)
torch.save(state, folder / "resnet18.pth")
save_file({k: v.contiguous() for k, v in state.items()}, folder / "resnet18.safetensors")
print(f"{len(state)} tensors")
