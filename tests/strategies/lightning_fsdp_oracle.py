"""Test oracle for volt's FSDP sharded checkpoints against the code Lightning's FSDPStrategy runs.

Lightning's FSDPStrategy refuses accelerator="cpu" (Trainer and Fabric alike), so this script runs what
the strategy runs, on the CPU: torch's FSDP (FULL_SHARD, use_orig_params) over Gloo on 127.0.0.1, and
Lightning's own helpers for a sharded save (_get_sharded_state_dict_context, FSDP.optim_state_dict,
_distributed_checkpoint_save, meta.pt) and for a sharded load (the optimizer path of
FSDPStrategy.load_checkpoint when fitting, meta.pt with torch.load's default weights_only).

  lightning_fsdp_oracle.py write DIR WORLD
      WORLD ranks train ddp_worker.cpp's MLP (fc1 8->32, tanh, fc2 32->4; AdamW lr 1e-2, weight decay
      1e-2) two steps and save it as FSDPStrategy.save_checkpoint(state_dict_type="sharded") does, into
      DIR/ckpt; the gathered model and optimizer state go to DIR/expected.safetensors under the names
      `volt convert` gives ("model.fc1.weight", "optimizer_0.state.fc1.weight.exp_avg", ...)
  lightning_fsdp_oracle.py load CKPT WORLD EXPECTED STEP
      WORLD ranks load CKPT as FSDPStrategy.load_checkpoint does, gather, and compare every tensor of
      EXPECTED (volt convert's output) exactly, the param groups' hyperparameters and meta.pt's
      global_step (STEP); exit 1 on the first difference
"""
import os
import socket
import sys
from pathlib import Path

import torch

LR = WEIGHT_DECAY = 1e-2


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _setup(rank, world, port):
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = FSDP(MLP(), device_id=torch.device("cpu"), use_orig_params=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    return model, optimizer


def _full(t, world):
    """A sharded state dict's tensor, whole on every rank: its local shards all-gathered by offset (FSDP's
    own full optimizer gather returns buffers it reuses, so exp_avg and exp_avg_sq come back equal)."""
    import torch.distributed as dist

    if hasattr(t, "full_tensor"):  # DTensor
        return t.full_tensor().detach().clone()
    if not hasattr(t, "local_shards"):
        return torch.as_tensor(t).detach().clone()
    pieces = [(list(s.metadata.shard_offsets), s.tensor.detach().clone()) for s in t.local_shards()]
    everyone = [None] * world
    dist.all_gather_object(everyone, pieces)
    full = torch.full(tuple(t.size()), float("nan"), dtype=pieces[0][1].dtype if pieces else torch.float32)
    for rank_pieces in everyone:
        for offsets, piece in rank_pieces:
            full[tuple(slice(o, o + n) for o, n in zip(offsets, piece.shape))] = piece
    return full


def _gathered(model, optimizer, world):
    """The full model and optimizer state under volt convert's names, and the param groups."""
    from lightning.fabric.strategies.fsdp import _get_sharded_state_dict_context
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with _get_sharded_state_dict_context(model):
        model_state = model.state_dict()
        optimizer_state = FSDP.optim_state_dict(model, optimizer)
    flat = {f"model.{name}": _full(t, world) for name, t in model_state.items()}
    for name, entry in sorted(optimizer_state["state"].items()):
        for key, value in sorted(entry.items()):
            flat[f"optimizer_0.state.{name}.{key}"] = _full(value, world)
    return flat, optimizer_state["param_groups"]


def _write_rank(rank, world, port, directory):
    import torch.distributed as dist
    from lightning.fabric.strategies.fsdp import _distributed_checkpoint_save, _get_sharded_state_dict_context
    from safetensors.torch import save_file
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model, optimizer = _setup(rank, world, port)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 8, generator=generator), torch.randint(0, 4, (8,), generator=generator)
    for _ in range(2):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    # FSDPStrategy.save_checkpoint, state_dict_type="sharded": the Trainer's checkpoint dict, its
    # "state_dict" and "optimizer_states" as DCP items, the rest in meta.pt.
    with _get_sharded_state_dict_context(model):
        converted = {"model": model.state_dict(), "optimizer_0": FSDP.optim_state_dict(model, optimizer)}
    path = Path(directory) / "ckpt"
    path.mkdir(parents=True, exist_ok=True)
    _distributed_checkpoint_save(converted, path)
    expected, _ = _gathered(model, optimizer, world)
    if rank == 0:
        import lightning

        meta = {"epoch": 0, "global_step": 2, "pytorch-lightning_version": lightning.__version__,
                "callbacks": {}, "lr_schedulers": []}
        torch.save(meta, path / "meta.pt")
        save_file(expected, os.path.join(directory, "expected.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


def _load_rank(rank, world, port, checkpoint, expected_path, step, failures):
    import torch.distributed as dist
    from lightning.fabric.strategies.fsdp import _distributed_checkpoint_load, _get_sharded_state_dict_context
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model, optimizer = _setup(rank, world, port)
    with torch.no_grad():  # nothing may survive from the fresh model
        for p in model.parameters():
            p.fill_(-99.0)
    path = Path(checkpoint)
    with _get_sharded_state_dict_context(model):
        module_state = {"model": model.state_dict()}
        _distributed_checkpoint_load(module_state, path)
        model.load_state_dict(module_state["model"])
        optimizer_state = load_sharded_optimizer_state_dict(
            model_state_dict=module_state["model"], optimizer_key="optimizer_0",
            storage_reader=FileSystemReader(path=path))
        optimizer.load_state_dict(
            FSDP.optim_state_dict_to_load(optim_state_dict=optimizer_state["optimizer_0"], model=model,
                                          optim=optimizer))
    meta = torch.load(path / "meta.pt")  # torch's default weights_only, as Lightning's default
    loaded, groups = _gathered(model, optimizer, world)
    if rank == 0:
        problems = []
        for name, want in load_file(expected_path).items():
            got = loaded.get(name)
            if got is None:
                problems.append(f"{name}: Lightning's load has no such tensor")
            elif got.shape != want.shape or not torch.equal(got.double(), want.double()):
                problems.append(f"{name}: Lightning loaded {got} but volt saved {want}")
        if set(loaded) - set(load_file(expected_path)):
            problems.append(f"volt saved no {sorted(set(loaded) - set(load_file(expected_path)))}")
        if len(groups) != 1 or groups[0]["lr"] != LR or groups[0]["weight_decay"] != WEIGHT_DECAY:
            problems.append(f"param groups {groups}")
        if meta.get("global_step") != step:
            problems.append(f"meta.pt global_step {meta.get('global_step')}, expected {step}")
        with open(failures, "w") as f:
            f.write("\n".join(problems))
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main(argv):
    import torch.multiprocessing as mp

    if argv[1] == "write":
        world = int(argv[3])
        mp.spawn(_write_rank, args=(world, _free_port(), argv[2]), nprocs=world, join=True)
        return 0
    if argv[1] == "load":
        world = int(argv[3])
        failures = argv[2].rstrip("/") + ".oracle-failures"
        mp.spawn(_load_rank, args=(world, _free_port(), argv[2], argv[4], int(argv[5]), failures),
                 nprocs=world, join=True)
        problems = open(failures).read()
        os.remove(failures)
        if problems:
            print(problems)
            return 1
        print("Lightning's FSDP load matches")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
