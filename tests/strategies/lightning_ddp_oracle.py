"""Python side of DDPLightning: real Lightning 2.6 trains the FashionCNN twin with strategy="ddp" on two CPU
processes (its own subprocess launcher, Gloo) from weights and data it writes for volt to start from.

Usage: MASTER_PORT=P lightning_ddp_oracle.py DIR BATCH STEPS
  -> DIR/init.pt (initial state dict), DIR/data.pt ({"x", "y"}), DIR/lightning.pt (weights after STEPS steps)"""
import os
import sys
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainer"))
from lightning_oracle import FashionCNN  # noqa: E402  (the twin of volt::models::FashionCNN)

warnings.filterwarnings("ignore")


def main():
    out, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = FashionCNN(channels1=4, channels2=8, hidden=16, dropout=0.0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    if "LOCAL_RANK" not in os.environ:  # the launching process (rank 0), before Lightning starts rank 1
        torch.save(model.state_dict(), os.path.join(out, "init.pt"))
        torch.save({"x": x, "y": y}, os.path.join(out, "data.pt"))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=out)
    # Lightning swaps the sampler for its DistributedSampler, which shuffles with seed 0 even here.
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False))
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), os.path.join(out, "lightning.pt"))


if __name__ == "__main__":
    main()
