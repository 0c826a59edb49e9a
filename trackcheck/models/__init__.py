"""Shipped models: a small-image ResNet, an MLP and a tiny GPT."""

from trackcheck.models._init import set_output_bias
from trackcheck.models.gpt import GPT
from trackcheck.models.mlp import MLP
from trackcheck.models.resnet import ResNet

__all__ = ["GPT", "MLP", "ResNet", "set_output_bias"]
