"""Python side of lightning_interop_test: real Lightning trains, saves and resumes the CNN that
volt::models::FashionCNN mirrors (same layer names, hyper-parameters, optimizer and schedule).

Usage: lightning_oracle.py train DIR           -> DIR/lightning.ckpt, DIR/io.pt (an input and its output)
       lightning_oracle.py resume CKPT IO OUT  -> loads volt's checkpoint, checks the forward pass on IO's
                                                  input, resumes fit to max_epochs=4, prints one JSON line"""
import json
import os
import sys
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore")


class FashionCNN(L.LightningModule):
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
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.hparams.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


def loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32), x[:8]


def trainer(max_epochs, root, callbacks=()):
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=root, callbacks=list(callbacks))


def main():
    torch.manual_seed(0)
    mode = sys.argv[1]
    if mode == "train":
        out = sys.argv[2]
        data, x = loader()
        model = FashionCNN(channels1=4, channels2=8, hidden=16)
        ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=out, filename="lightning")
        trainer(2, out, [ckpt]).fit(model, data)
        model.eval()
        with torch.no_grad():
            torch.save({"input": x, "output": model(x)}, os.path.join(out, "io.pt"))
    elif mode == "resume":
        ckpt_path, io_path, out = sys.argv[2:5]
        io = torch.load(io_path, weights_only=True)
        model = FashionCNN.load_from_checkpoint(ckpt_path)
        model.eval()
        with torch.no_grad():
            diff = (model(io["input"]) - io["output"]).abs().max().item()
        data, _ = loader()
        t = trainer(4, os.path.dirname(out))
        t.fit(model, data, ckpt_path=ckpt_path)
        opt = t.optimizers[0]
        print(json.dumps({"max_abs_diff": diff, "global_step": t.global_step, "current_epoch": t.current_epoch,
                          "lr": opt.param_groups[0]["lr"], "hparams": dict(model.hparams),
                          "adam_step": float(opt.state[opt.param_groups[0]["params"][0]]["step"])}))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
