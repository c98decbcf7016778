"""Stage 1, squeeze: train the teacher on the real training set (SRe2L, Yin et al. NeurIPS 2023, §3.1).

SGD with momentum and a cosine learning rate; random crop (zero padding) + horizontal flip through kornia.
"""

from __future__ import annotations

import time

import kornia.augmentation as K
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .common import RunLayout, build_model, cosine_lr, evaluate, load_split, normalize, save_teacher
from .config import Config
from .utils import MetricsLog, is_rank0, pick_device, read_json


def squeeze(cfg: Config, force: bool = False) -> dict:
    """Train the teacher and save ``teacher/model.safetensors`` + ``teacher/teacher.json``.

    Skipped when ``teacher.json`` already exists (unless ``force``).

    Returns:
        The teacher info: model name and args, ``top1`` (fraction) on the real test split, epochs, seconds.

    Raises:
        DataError / RegistryError: bad dataset or model configuration.
    """
    layout = RunLayout(cfg.run_path)
    meta_f = layout.teacher_dir / "teacher.json"
    if meta_f.is_file() and not force:
        return read_json(meta_f)
    device = pick_device(cfg.device)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    sc = cfg.squeeze
    torch.manual_seed(cfg.seed)  # model init and kornia's sampling during training
    model = build_model(sc.model, train.num_classes, train.shape).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=sc.lr, momentum=sc.momentum, weight_decay=sc.weight_decay,
                          nesterov=True)
    _, h, w = train.shape
    aug = nn.Sequential(
        K.RandomCrop((h, w), padding=sc.crop_padding) if sc.crop_padding > 0 else nn.Identity(),
        K.RandomHorizontalFlip() if sc.flip else nn.Identity(),
    )
    g = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = (len(train) + sc.batch_size - 1) // sc.batch_size
    total = sc.epochs * steps_per_epoch
    log = MetricsLog(layout.metrics)
    t0 = time.time()
    step = 0
    bar = tqdm(total=total, desc="squeeze", disable=not is_rank0(), unit="step")
    for epoch in range(sc.epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * sc.batch_size:(i + 1) * sc.batch_size]
            x = train.images[idx].to(device).float().div_(255)
            x = normalize(aug(x), train.mean, train.std).contiguous(memory_format=torch.channels_last)
            y = train.labels[idx].to(device)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(sc.lr, step, total)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        log.log(stage="squeeze", epoch=epoch, loss=loss.item())
    bar.close()
    top1 = evaluate(model, test, train.mean, train.std, device)
    info = {
        "model": sc.model.name, "model_args": dict(sc.model.args), "num_classes": train.num_classes,
        "shape": list(train.shape), "mean": list(train.mean), "std": list(train.std),
        "classes": train.classes, "dataset": cfg.data.dataset, "epochs": sc.epochs, "top1": top1,
        "seconds": round(time.time() - t0, 2),
    }
    log.log(stage="squeeze", top1=top1)
    save_teacher(model, layout.teacher_dir, info)
    return read_json(meta_f)
