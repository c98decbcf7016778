"""Train a student on a run's soft labels in a plain PyTorch loop (labeldistill's public API only).

    python examples/train_with_soft_labels.py runs/fmnist_demo lpld --factor 10
    torchrun --nproc-per-node 2 examples/train_with_soft_labels.py runs/fmnist_demo lpld --factor 10

The batches are those `labeldistill validate` trains on (stored crops, flips, CutMix; its replay order); the loss,
schedule (cosine set once per epoch, no warm-up) and weight decay (none on 1-D parameters: BatchNorm and biases)
and initialisation are validate's defaults, so on CPU the printed top-1 is validate's with
`validate.model.name=train_with_soft_labels:small_convnet` (this file on PYTHONPATH) and adamw.
"""

import argparse
import math
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from labeldistill import load_eval_split, load_soft_label_batches


def small_convnet(num_classes: int, in_channels: int, image_size: int, width: int = 32, depth: int = 3) -> nn.Module:
    """depth × [conv 3×3 → BatchNorm → ReLU → avg-pool 2] → linear: input (N, C, S, S), logits (N, K)."""
    layers, ch = [], in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.AvgPool2d(2)]
        ch, image_size = width, image_size // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * image_size * image_size, num_classes))


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description="Train a student on a run's soft labels; print its top-1.")
    p.add_argument("run_dir"), p.add_argument("mode")
    p.add_argument("--factor", type=float, default=1.0, help="pruning factor of the label store (1 = all labels)")
    p.add_argument("--width", type=int, default=32), p.add_argument("--depth", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.002), p.add_argument("--weight-decay", type=float, default=0.01)
    a = p.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():  # launched by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    batches = load_soft_label_batches(a.run_dir, a.mode, a.factor)  # this rank's rows of every stored step
    c, h, _ = batches.input_shape
    torch.manual_seed(batches.seed)
    model = small_convnet(batches.num_classes, c, h, a.width, a.depth).to(device).to(memory_format=torch.channels_last)
    net = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    params = list(model.parameters())  # weight decay on conv / linear weights only, not on 1-D parameters
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": a.weight_decay},
                             {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=a.lr)
    T, total, it = batches.temperature, len(batches), iter(batches)
    for epoch in range(batches.epochs):
        for group in opt.param_groups:  # cosine over epochs: constant within an epoch, no warm-up
            group["lr"] = 0.5 * a.lr * (1.0 + math.cos(math.pi * epoch / batches.epochs))
        for _ in range(batches.epoch_len(epoch)):
            x, t = next(it)  # x: (B, C, H, W) augmented, t: (B, K) = softmax(teacher logits / T)
            out = net(x.to(device).contiguous(memory_format=torch.channels_last))
            loss = F.kl_div(F.log_softmax(out / T, 1), t.to(device), reduction="batchmean") * (T * T)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    images, labels = load_eval_split(a.run_dir, batches.mean, batches.std)  # the real test split, normalised
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xb.to(device).contiguous(memory_format=torch.channels_last)).argmax(1).cpu() == yb)
                          .sum()) for xb, yb in zip(images.split(1000), labels.split(1000)))
    top1 = correct / len(labels)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"top-1 {100 * top1:.2f} % on {len(labels)} test images after {total} steps")
    return top1


if __name__ == "__main__":
    main()
