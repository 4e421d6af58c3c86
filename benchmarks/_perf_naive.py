"""benchmarks/perf.py, part 2: a naive research-code reference against autopetl's path.

The naive side is written the way common PETL research code is: images kept as encoded PNG files
(here: PNG bytes in memory, so disk speed does not enter) and decoded, resized and normalised with
PIL + torchvision transforms in a DataLoader every epoch, fp32, the backbone rebuilt from its
weights file for every trial (``timm.create_model`` + load), and VPT-deep written as VPT's
official code writes it (a ``torch.cat`` of [CLS], the layer's prompts and the patch tokens in a
Python loop over the blocks).

The autopetl side is the library's own path: the same PNG bytes decoded and resized once to
uint8 tensors (what ``autopetl.tasks.data`` does for a VTAB-1k folder), normalised per batch on the
device, the backbone built once and deep-copied per trial by ``pipeline.attach``, and
``autopetl.training.train`` (bf16 autocast where the CPU has bf16 units).

Both sides seed the head and the prompts identically and draw the same batch order, so their
accuracies must agree (and do, see the report's fairness rows).
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms

from autopetl.backbones import BackboneSpec, build_backbone, input_stats
from autopetl.methods import build_method
from autopetl.pipeline import attach
from autopetl.tasks import dsprites
from autopetl.tasks.data import SplitData, resize_uint8
from autopetl.training import TrainConfig, seed_everything, train

TASK_FOLDER = "dsprites_loc"
NUM_CLASSES = 16


def png_split(split: str, limit: int | None) -> tuple[list[bytes], list[int]]:
    """dSprites images as the encoded PNG files a VTAB-1k folder holds (64 px, RGB)."""
    grey, labels = dsprites.generate(TASK_FOLDER, split, seed=0)
    n = len(labels) if limit is None else min(limit, len(labels))
    blobs = []
    for g in grey[:n]:
        buf = io.BytesIO()
        Image.fromarray(g).convert("RGB").save(buf, format="PNG")
        blobs.append(buf.getvalue())
    return blobs, [int(x) for x in labels[:n]]


# --- the naive reference ------------------------------------------------------------------------


class PngDataset(Dataset):
    def __init__(self, blobs: list[bytes], labels: list[int], transform: Any) -> None:
        self.blobs, self.labels, self.transform = blobs, labels, transform

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):
        image = Image.open(io.BytesIO(self.blobs[i])).convert("RGB")
        return self.transform(image), self.labels[i]


def naive_transform(size: int, mean, std) -> Any:
    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


class NaiveVPTDeep(nn.Module):
    """VPT-deep as KMnP/vpt writes it: the prompts of layer i spliced in before block i."""

    def __init__(self, vit: nn.Module, prompt_length: int) -> None:
        super().__init__()
        self.vit = vit
        for p in vit.parameters():
            p.requires_grad = False
        for p in vit.head.parameters():
            p.requires_grad = True
        self.num_tokens = prompt_length
        depth, dim = len(vit.blocks), vit.embed_dim
        ph, pw = vit.patch_embed.patch_size
        val = math.sqrt(6.0 / float(3 * ph * pw + dim))
        self.prompts = nn.Parameter(torch.zeros(depth, prompt_length, dim))
        nn.init.uniform_(self.prompts, -val, val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        b = x.shape[0]
        for i, block in enumerate(vit.blocks):
            prompt = self.prompts[i].expand(b, -1, -1)
            if i == 0:
                x = torch.cat((x[:, :1, :], prompt, x[:, 1:, :]), dim=1)
            else:
                x = torch.cat((x[:, :1, :], prompt, x[:, 1 + self.num_tokens :, :]), dim=1)
            x = block(x)
        x = vit.norm(x)
        return vit.head(x[:, 0])


def _cosine(total: int):
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))


def naive_trial(
    trial: dict[str, Any],
    *,
    model_name: str,
    weights: Path,
    img_size: int,
    train_ds: PngDataset,
    val_ds: PngDataset,
    epochs: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    vit = timm.create_model(
        model_name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(weights)),
        num_classes=NUM_CLASSES,
        img_size=img_size,
    )
    build_s = time.perf_counter() - t0
    # The same random draws in the same order as pipeline.attach + VPTModel: identical init.
    seed_everything(seed)
    vit.reset_classifier(NUM_CLASSES)
    model = NaiveVPTDeep(vit, trial["prompt_length"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=trial["lr"], weight_decay=1e-4)
    steps = math.ceil(len(train_ds) / batch_size) * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(steps))
    # shuffle=True, with the sampler's own generator: the same randperm as train() draws (a
    # DataLoader(generator=...) would first spend a draw on its worker base seed).
    sampler = RandomSampler(train_ds, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(train_ds, batch_size=batch_size, sampler=sampler)
    torch.manual_seed(seed)
    train_s, seen, loss_sum = 0.0, 0, 0.0
    for _ in range(epochs):
        model.train()
        t1 = time.perf_counter()
        for x, y in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
        train_s += time.perf_counter() - t1
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(val_ds, batch_size=256):
                correct += int((model(x).argmax(-1) == y).sum())
        val_acc = correct / len(val_ds)
    return {
        **trial,
        "backbone_build_s": build_s,
        "train_s": train_s,
        "train_images_per_s": seen / train_s,
        "train_loss": loss_sum / seen,
        "val_acc": val_acc,
        "wall_s": time.perf_counter() - t0,
    }


# --- autopetl's path ----------------------------------------------------------------------------


def decode_once(blobs: list[bytes], labels: list[int], img_size: int) -> SplitData:
    """The PNGs decoded and resized once to uint8, as autopetl.tasks.data caches a folder split."""
    images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    chunks = [resize_uint8(c, img_size) for c in tensor.split(256)]
    return SplitData(torch.cat(chunks), torch.tensor(labels, dtype=torch.int64))


def autopetl_search(
    trials: list[dict[str, Any]],
    *,
    model_name: str,
    weights: Path,
    img_size: int,
    train_png: tuple[list[bytes], list[int]],
    val_png: tuple[list[bytes], list[int]],
    epochs: int,
    batch_size: int,
    seed: int,
    precision: str,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    train_data = decode_once(*train_png, img_size)
    val_data = decode_once(*val_png, img_size)
    data_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    backbone = build_backbone(BackboneSpec(model_name, str(weights), img_size), NUM_CLASSES)
    build_s = time.perf_counter() - t1
    mean, std = input_stats(backbone)
    rows = []
    for trial in trials:
        t2 = time.perf_counter()
        method = build_method("vpt", {"prompt_length": trial["prompt_length"], "deep": True})
        model = attach(backbone, method, seed=seed)
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=trial["lr"],
            weight_decay=1e-4,
            warmup_epochs=0,
            seed=seed,
            precision=precision,
            device="cpu",
        )
        result = train(model, train_data, val_data, config, mean=mean, std=std)
        rows.append(
            {
                **trial,
                "train_images_per_s": result.images_per_s,
                "train_loss": result.epochs[-1].train_loss,
                "val_acc": result.last_val_acc,
                "wall_s": time.perf_counter() - t2,
            }
        )
    return {
        "precision": precision,
        "data_prep_s": data_s,
        "backbone_build_s": build_s,
        "trials": rows,
        "total_s": time.perf_counter() - t0,
        "train_data": train_data,
        "val_data": val_data,
    }


def naive_search(
    trials: list[dict[str, Any]],
    *,
    model_name: str,
    weights: Path,
    img_size: int,
    train_png: tuple[list[bytes], list[int]],
    val_png: tuple[list[bytes], list[int]],
    epochs: int,
    batch_size: int,
    seed: int,
    mean,
    std,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    transform = naive_transform(img_size, mean, std)
    train_ds = PngDataset(*train_png, transform)
    val_ds = PngDataset(*val_png, transform)
    rows = [
        naive_trial(
            trial,
            model_name=model_name,
            weights=weights,
            img_size=img_size,
            train_ds=train_ds,
            val_ds=val_ds,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
        )
        for trial in trials
    ]
    return {"precision": "fp32", "trials": rows, "total_s": time.perf_counter() - t0}


def input_agreement(
    val_png: tuple[list[bytes], list[int]], autopetl_val: SplitData, img_size: int, n: int = 64
) -> dict[str, float]:
    """The naive transform's pixels against autopetl's cached uint8, in 0-255 levels."""
    resize = transforms.Resize(
        (img_size, img_size), interpolation=transforms.InterpolationMode.BILINEAR
    )
    naive = torch.stack(
        [
            transforms.functional.pil_to_tensor(resize(Image.open(io.BytesIO(b)).convert("RGB")))
            for b in val_png[0][:n]
        ]
    ).float()
    ours = autopetl_val.images[:n].float()
    diff = (naive - ours).abs()
    return {
        "images": n,
        "max_abs_diff_levels": float(diff.max()),
        "mean_abs_diff_levels": float(diff.mean()),
    }
