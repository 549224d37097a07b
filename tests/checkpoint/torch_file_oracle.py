"""Test oracle for volt's PyTorch-file reader and writer: real torch.save / torch.load (and Lightning).

  torch_file_oracle.py write DIR        torch.save a set of files into DIR, each with FILE.json describing
                                        what was saved (the same description volt computes from its reading)
  torch_file_oracle.py lightning DIR    train a tiny model with Lightning and keep its .ckpt (+ .json)
  torch_file_oracle.py check FILE JSON  torch.load FILE (weights_only where the torch has it) and compare
                                        with the description volt wrote; exit 1 with the first difference

The description is canonical JSON: floats as their IEEE bits, tensors with dtype, shape, strides, offset,
requires_grad, the index of their storage in order of first appearance, and their bytes in hex.
"""
import collections
import json
import math
import os
import struct
import sys

import torch

DTYPES = {
    torch.float64: "float64", torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8",
    torch.bool: "bool", torch.complex64: "complex64", torch.complex128: "complex128",
}


def storage_of(t):
    return t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()


class Describer:
    def __init__(self):
        self.storages = {}

    def __call__(self, v):
        if v is None:
            return None
        if isinstance(v, bool):
            return {"bool": v}
        if isinstance(v, int):
            return {"int": v}
        if isinstance(v, float):
            return {"float": struct.pack("<d", v).hex()}
        if isinstance(v, str):
            return {"str": v}
        if isinstance(v, bytes):
            return {"bytes": v.hex()}
        if isinstance(v, torch.Tensor):
            index = -1  # tensors without elements have no storage identity worth comparing
            if v.numel() > 0:
                index = self.storages.setdefault(storage_of(v).data_ptr(), len(self.storages))
            flat = v.detach().contiguous().reshape(-1)
            raw = (flat.to(torch.uint8) if flat.dtype == torch.bool else flat).view(torch.uint8)
            return {"tensor": {"dtype": DTYPES[v.dtype], "shape": list(v.shape), "stride": list(v.stride()),
                               "offset": v.storage_offset(), "requires_grad": v.requires_grad,
                               "storage": index, "data": bytes(raw.flatten().tolist()).hex()}}
        if isinstance(v, list):
            return {"list": [self(x) for x in v]}
        if isinstance(v, tuple):
            return {"tuple": [self(x) for x in v]}
        if isinstance(v, dict):
            return {"dict": [[self(k), self(x)] for k, x in v.items()],
                    "ordered": isinstance(v, collections.OrderedDict)}
        return {"object": type(v).__module__ + "." + type(v).__qualname__}


def describe(v):
    return Describer()(v)


def save(obj, path):
    torch.save(obj, path)
    with open(path + ".json", "w") as f:
        json.dump(describe(obj), f)


def write(folder):
    torch.manual_seed(0)
    os.makedirs(folder, exist_ok=True)
    tensors = collections.OrderedDict()
    for dtype in DTYPES:
        if dtype.is_complex:
            continue
        if dtype == torch.bool:
            tensors["bool"] = torch.rand(3, 5) > 0.5
        elif dtype.is_floating_point:
            tensors[DTYPES[dtype]] = torch.randn(4, 3).to(dtype)
        else:
            info = torch.iinfo(dtype)
            tensors[DTYPES[dtype]] = torch.randint(info.min, info.max, (2, 7), dtype=torch.int64).to(dtype)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors["base"] = base
    tensors["transposed"] = base.t()        # non-contiguous view of the same storage
    tensors["row_slice"] = base[1:3, ::2]   # offset and strides
    tensors["scalar"] = torch.tensor(3.5)
    tensors["zero_size"] = torch.zeros(0, 5)
    tensors["special"] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-40])
    tensors["grad_leaf"] = torch.nn.Parameter(torch.randn(3)).detach().requires_grad_(True)
    save(tensors, os.path.join(folder, "state_dict.pt"))

    # A checkpoint shaped like Lightning's, with a real Adam step and a real scheduler.
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    ckpt = {
        "epoch": 3,
        "global_step": 12345678901,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}},
                               "epoch_loop.state_dict": {"_batches_that_stepped": 12}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "best_model_score": torch.tensor(0.25), "best_model_path": "/tmp/epoch=3.ckpt",
            "kth_value": torch.tensor(float("inf")), "best_k_models": {}, "dirpath": None}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-3, "layers": [4, 8, 2], "betas": (0.9, 0.999), "name": "tiny \u00e9\u4e2d",
                             "use_bn": True, "dropout": None, "seed": -7, "big": -(2 ** 40), "raw": b"\x00\xff\x80a",
                             "nested": {"a": {"b": [1.5, "x", (None,)]}}},
    }
    save(ckpt, os.path.join(folder, "lightning_shaped.ckpt"))


def lightning(folder):
    import lightning as L
    torch.manual_seed(0)

    class Tiny(L.LightningModule):
        def __init__(self, hidden=8, lr=1e-3, name="tiny"):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.BatchNorm1d(hidden),
                                           torch.nn.Linear(hidden, 1))

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1)}

    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=folder,
                        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, filename="real")])
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    path = os.path.join(folder, "real.ckpt")
    with open(path + ".json", "w") as f:
        json.dump(describe(torch.load(path, weights_only=False)), f)


def first_difference(a, b, where="$"):
    if type(a) != type(b):
        return f"{where}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"
    if isinstance(a, dict):
        if sorted(a) != sorted(b):
            return f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            d = first_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{where}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"


def check(path, expected_path):
    # PyTorch 1.13's weights_only unpickler lacks opcodes torch.save itself writes (BINFLOAT): 2.x only.
    kwargs = {"weights_only": True} if int(torch.__version__.split(".")[0]) >= 2 else {}
    loaded = torch.load(path, **kwargs)
    with open(expected_path) as f:
        expected = json.load(f)
    difference = first_difference(describe(loaded), expected)
    if difference:
        print(f"torch {torch.__version__} read {path} differently from what volt wrote: {difference}")
        sys.exit(1)
    print(f"torch {torch.__version__} read {path}: every value equal")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "write":
        write(sys.argv[2])
    elif command == "lightning":
        lightning(sys.argv[2])
    elif command == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {command}")
