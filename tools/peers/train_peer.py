"""Peer row of `volt bench train --strategy ddp`: Lightning 2.6 trains the same CNN (volt::models::FashionCNN's
twin: layer names, AdamW, cosine schedule) on Fashion-MNIST from Debian's files with strategy="ddp" on the CPU,
its own subprocess launcher and Gloo. Rank 0 prints one JSON object: steps/s after the warm-up and the largest
rank's peak RSS. Run by `volt bench train`; not part of volt itself (volt never needs Python)."""
import argparse
import gzip
import json
import os
import resource
import sys
import time
import warnings

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "trainer"))
from lightning_oracle import FashionCNN  # noqa: E402

warnings.filterwarnings("ignore")


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
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(FashionCNN(), DataLoader(TensorDataset(x, y), batch_size=a.batch_size, shuffle=True))
    rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    largest = trainer.strategy.reduce(torch.tensor(rss, dtype=torch.float64), reduce_op="max").item()
    if trainer.global_rank == 0:
        print(json.dumps({"steps_per_second": a.steps / (timer.end - timer.start), "peak_rss_bytes": largest,
                          "world_size": trainer.world_size, "threads": torch.get_num_threads(),
                          "torch_version": torch.__version__, "lightning_version": L.__version__}))


if __name__ == "__main__":
    main()
