"""Peer row of `volt bench train --strategy ddp`: Lightning 2.6 trains the same CNN (volt::models::FashionCNN's
twin: layer names, AdamW, cosine schedule) on Fashion-MNIST from Debian's files with strategy="ddp" on the CPU,
its own subprocess launcher and Gloo. Rank 0 prints one JSON object: steps/s after the warm-up and the largest
rank's peak RSS. Run by `volt bench train`; not part of volt itself (volt never needs Python)."""
import argparse
import gzip
import json
import os
import resource
import time
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore")


class FashionCNN(L.LightningModule):
    """volt::models::FashionCNN in Lightning (as tests/trainer/lightning_oracle.py; installed peers stand alone)."""

    def __init__(self, channels1=32, channels2=64, hidden=128, dropout=0.25, lr=2e-3, epochs=4, weight_decay=1e-4):
        super().__init__()
        self.save_hyperparameters()
        self.conv1 = nn.Conv2d(1, channels1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels1)
        self.conv2 = nn.Conv2d(channels1, channels2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels2)
        self.fc1 = nn.Linear(channels2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), self.hparams.dropout, self.training)
        return self.fc2(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


class StepTimer(L.Callback):
    def __init__(self, warmup):
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--precision", default="32-true")
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.from_numpy(read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz")).copy()).float().div_(255)
    y = torch.from_numpy(read_idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).copy()).long()
    x = ((x - 0.2860) / 0.3530).unsqueeze(1)
    timer = StepTimer(a.warmup)
    trainer = L.Trainer(accelerator="cpu", devices=a.devices, strategy="ddp", precision=a.precision,
                        max_steps=a.warmup + a.steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[timer])
    trainer.fit(FashionCNN(), DataLoader(TensorDataset(x, y), batch_size=a.batch_size, shuffle=True))
    rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    largest = trainer.strategy.reduce(torch.tensor(rss, dtype=torch.float64), reduce_op="max").item()
    if trainer.global_rank == 0:
        print(json.dumps({"steps_per_second": a.steps / (timer.end - timer.start), "peak_rss_bytes": largest,
                          "world_size": trainer.world_size, "threads": torch.get_num_threads(),
                          "torch_version": torch.__version__, "lightning_version": L.__version__}))


if __name__ == "__main__":
    main()
