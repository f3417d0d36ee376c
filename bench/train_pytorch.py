"""Training throughput of the reference FCN in PyTorch, for `just bench-train`.

The same network, loss, optimiser, crop and batch as `seg-host train`, fed like d2l
feeds it (every image decoded into memory first, random crops in a DataLoader).
Prints one JSON line: {"images_per_sec": ..., "images": ..., "seconds": ...}.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host/tests/reference"))
from fcn_reference import bilinear_kernel, d2l_loss  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class Crops(torch.utils.data.Dataset):
    def __init__(self, root, height, width):
        ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
        self.images = [torch.from_numpy(np.array(Image.open(root / "JPEGImages" / f"{i}.jpg").convert("RGB"))).permute(2, 0, 1) for i in ids]
        self.labels = [torch.from_numpy(np.array(Image.open(root / "SegmentationClass" / f"{i}.png"))).long() for i in ids]
        self.height, self.width = height, width

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img, lab = self.images[i], self.labels[i]
        y = torch.randint(0, img.shape[1] - self.height + 1, ()).item()
        x = torch.randint(0, img.shape[2] - self.width + 1, ()).item()
        img = img[:, y:y + self.height, x:x + self.width].float() / 255
        lab = lab[y:y + self.height, x:x + self.width]
        lab = torch.where(lab == 255, lab, torch.zeros_like(lab))  # class ids do not matter for speed
        return (img - MEAN) / STD, lab


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--crop", default="320x480")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=0, help="steps left out of the timing (seg-host times its whole epoch)")
    args = ap.parse_args()
    h, w = map(int, args.crop.split("x"))
    resnet = torchvision.models.resnet18(weights=None)
    net = nn.Sequential(*list(resnet.children())[:-2])
    net.add_module("final_conv", nn.Conv2d(512, args.classes, kernel_size=1))
    net.add_module("transpose_conv", nn.ConvTranspose2d(args.classes, args.classes, kernel_size=64, padding=16, stride=32))
    net.transpose_conv.weight.data.copy_(bilinear_kernel(args.classes, args.classes, 64))
    opt = torch.optim.SGD(net.parameters(), lr=0.001, weight_decay=1e-3)
    loader = torch.utils.data.DataLoader(Crops(args.data, h, w), args.batch, shuffle=True, drop_last=True, num_workers=args.workers)
    net.train()
    images, start = 0, time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            images, start = 0, time.perf_counter()
        opt.zero_grad()
        d2l_loss(net(x), y).backward()
        opt.step()
        images += x.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"images_per_sec": images / seconds, "images": images, "seconds": seconds, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
