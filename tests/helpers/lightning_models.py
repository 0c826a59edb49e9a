"""A LightningModule and DataModule as lightning-hydra-template writes them (its MNIST module
with a SimpleDenseNet, on trackcheck's 8x8 digits), and the bugs planted in them, for
tests/test_lightning.py. CPU, tiny, nothing downloaded."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification.accuracy import Accuracy

from trackcheck.data import digits


class SimpleDenseNet(nn.Module):
    """lightning-hydra-template's SimpleDenseNet, sized for 8x8 digits."""

    def __init__(self, input_size: int = 64, hidden: int = 64, output_size: int = 10) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(input_size, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, output_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.flatten(1))  # [B, 1, 8, 8] -> [B, 10]


class DigitsDataModule(pl.LightningDataModule):
    """The template's MNISTDataModule shape: datasets made in setup, loaders over them."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_train: Dataset[Any] | None = None
        self.data_val: Dataset[Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is None:
            spec = digits()
            self.data_train, self.data_val = spec.train, spec.test

    def train_dataloader(self) -> DataLoader[Any]:
        assert self.data_train is not None
        return DataLoader(self.data_train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        assert self.data_val is not None
        return DataLoader(self.data_val, batch_size=self.hparams.batch_size)


class DigitsLitModule(pl.LightningModule):
    """The template's MNISTLitModule: torchmetrics for loss and accuracy, ``self.log`` in
    ``training_step``, ``configure_optimizers`` returning an optimizer and a scheduler dict
    (which reads ``self.trainer``)."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.net = SimpleDenseNet()
        self.criterion = nn.CrossEntropyLoss()
        self.train_acc = Accuracy(task="multiclass", num_classes=10)
        self.val_acc = Accuracy(task="multiclass", num_classes=10)
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def logits_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.criterion(logits, y)

    def model_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch
        logits = self.forward(x)
        loss = self.logits_loss(logits, y)
        return loss, logits.argmax(dim=1), y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, preds, targets = self.model_step(batch)
        self.train_loss(loss)  # holds the loss with its graph until the next step
        self.train_acc(preds, targets)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, preds, targets = self.model_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, targets)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.Adam(self.trainer.model.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"},
        }


# --- planted bugs -------------------------------------------------------------------------
class SoftmaxBeforeCrossEntropy(DigitsLitModule):
    """Planted bug: probabilities into a loss that applies log_softmax itself."""

    def logits_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return self.criterion(logits.softmax(dim=1), y)


class SummedLoss(DigitsLitModule):
    """Planted bug: the loss summed over the batch, so it (and the gradient) scales with it."""

    def logits_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, reduction="sum")


class ManualLitModule(DigitsLitModule):
    """Manual optimization, as Lightning documents it: the step zeroes, backpropagates and
    steps the optimizer itself, then steps its scheduler."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__(lr)
        self.automatic_optimization = False

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        opt = self.optimizers()
        loss, preds, targets = self.model_step(batch)
        self.zero(opt)
        self.manual_backward(loss)
        opt.step()
        self.lr_schedulers().step()
        self.train_acc(preds, targets)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def zero(self, opt: Any) -> None:
        opt.zero_grad()

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1000, gamma=0.5)]


class ManualWithoutZeroGrad(ManualLitModule):
    """Planted bug: the manual step never clears the gradients, so they accumulate."""

    def zero(self, opt: Any) -> None:
        pass


class TwoOptimizers(ManualLitModule):
    """Manual optimization with one optimizer for the body and one for the head (as GANs and
    layer-wise learning rates do), both stepped by the step."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        body, head = self.optimizers()
        loss, _, _ = self.model_step(batch)
        body.zero_grad()
        head.zero_grad()
        self.manual_backward(loss)
        body.step()
        head.step()
        return loss

    def configure_optimizers(self) -> Any:
        *body, head = self.net.model
        params = [p for m in body for p in m.parameters()]
        return [
            torch.optim.Adam(params, lr=self.hparams.lr),
            torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9),
        ]
