"""Hugging Face examples, image-classification/run_image_classification.py: a
ViTForImageClassification trained by the Trainer on its own loss; pixel_values normalised by
the image processor's mean and std (0.5, 0.5); AdamW at lr 2e-5, batch 8 (the README's
command).

Tiny: a 2-layer, 32-wide ViT from a config (16x16 images, 4x4 patches, 3 channels) with random
init; tinted digits stand in for the README's beans/cats-vs-dogs.
"""

from __future__ import annotations

from typing import Any

import torch

from trackcheck import from_datasets

from ._data import DictItems, colour_digits

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/image-classification/run_image_classification.py"
GLUE = ""


def model() -> torch.nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    return ViTForImageClassification(cfg)


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = colour_digits(16)
    train = DictItems(pixel_values=(xtr - 0.5) / 0.5, labels=ytr)
    test = DictItems(pixel_values=(xte - 0.5) / 0.5, labels=yte)
    return {
        "model": model,
        "data": from_datasets(train, test, "multiclass", 10, kind="image", batch_size=8),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=2e-5, weight_decay=0.0),
        "loss": "model",
    }
