"""The reference FCN in PyTorch + torchvision, built as d2l's chapter builds it.

Called by host/tests/pytorch_parity.rs with a folder holding what seg-host wrote:
  checkpoint.safetensors  the FCN's weights (torchvision names for the body)
  inputs.safetensors      x (N×3×H×W), labels (N×H×W, 255 = void), lr, wd, momentum
It writes reference.safetensors: eval-mode logits, the d2l bilinear kernel, and every
parameter and batch-norm statistic after one SGD step in training mode.
"""
import sys
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F


def bilinear_kernel(in_channels, out_channels, kernel_size):
    # d2l's formula, verbatim in meaning.
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = (torch.arange(kernel_size).reshape(-1, 1), torch.arange(kernel_size).reshape(1, -1))
    filt = (1 - torch.abs(og[0] - center) / factor) * (1 - torch.abs(og[1] - center) / factor)
    weight = torch.zeros((in_channels, out_channels, kernel_size, kernel_size))
    weight[range(in_channels), range(out_channels), :, :] = filt
    return weight


def build(weights, classes):
    resnet = torchvision.models.resnet18(weights=None)
    resnet.fc = nn.Identity()  # the checkpoint has no fc: load the rest strictly
    body_sd = {k: v for k, v in weights.items() if not k.startswith(("final_conv.", "transpose_conv."))}
    resnet.load_state_dict(body_sd, strict=True)
    net = nn.Sequential(*list(resnet.children())[:-2])
    net.add_module("final_conv", nn.Conv2d(512, classes, kernel_size=1))
    net.add_module("transpose_conv", nn.ConvTranspose2d(classes, classes, kernel_size=64, padding=16, stride=32))
    with torch.no_grad():
        for layer in ("final_conv", "transpose_conv"):
            for p in ("weight", "bias"):
                getattr(getattr(net, layer), p).copy_(weights[f"{layer}.{p}"])
    return resnet, net


def d2l_loss(logits, labels):
    # Per-pixel cross-entropy, void ignored, mean over each image's labelled pixels, summed.
    per_pixel = F.cross_entropy(logits, labels, reduction="none", ignore_index=255)
    labelled = (labels != 255).sum(dim=(1, 2)).clamp_min(1).float()
    return (per_pixel.sum(dim=(1, 2)) / labelled).sum()


def main(folder):
    folder = Path(folder)
    torch.use_deterministic_algorithms(True)
    weights = load_file(folder / "checkpoint.safetensors")
    inputs = load_file(folder / "inputs.safetensors")
    x, labels = inputs["x"], inputs["labels"].long()
    lr, wd, momentum = (float(inputs[k]) for k in ("lr", "wd", "momentum"))
    classes = weights["final_conv.weight"].shape[0]
    resnet, net = build(weights, classes)

    out = {"bilinear": bilinear_kernel(classes, classes, 64)}
    net.eval()
    with torch.no_grad():
        out["logits_eval"] = net(x)

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd, momentum=momentum)
    opt.zero_grad()
    loss = d2l_loss(net(x), labels)
    loss.backward()
    opt.step()
    out["loss"] = loss.detach().reshape(1)
    # Name everything as seg-host does: torchvision names for the body.
    for k, v in resnet.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            out[f"after.{k}"] = v
    for layer in ("final_conv", "transpose_conv"):
        for p in ("weight", "bias"):
            out[f"after.{layer}.{p}"] = getattr(getattr(net, layer), p).detach()
    save_file({k: v.contiguous() for k, v in out.items()}, folder / "reference.safetensors")
    print(f"reference: {classes} classes, loss {loss.item():.6f}, {len(out)} tensors")


if __name__ == "__main__":
    main(sys.argv[1])
