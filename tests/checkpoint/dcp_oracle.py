"""Test oracle for volt's Distributed Checkpoint (DCP) reader and writer: real torch.distributed.checkpoint.

  dcp_oracle.py write DIR WORLD     WORLD Gloo processes on 127.0.0.1 save a sharded state dict (DTensors
                                    sharded on dim 0 and dim 1, a replicated tensor, a scalar, non-tensor
                                    state) into DIR/ckpt; the full tensors go to DIR/expected.safetensors
  dcp_oracle.py check DIR EXPECTED  dcp.load (one process, no process group) of the volt-written DIR into
                                    zero tensors shaped like EXPECTED's; exit 1 on the first difference;
                                    byte item 'step' (when .metadata has it) must load as the int 7
"""
import os
import socket
import sys

import torch


def expected_tensors():
    return {
        "model.w": torch.arange(35, dtype=torch.float32).reshape(7, 5) * 0.5,
        "model.e": (torch.arange(30, dtype=torch.float32).reshape(10, 3) - 7).to(torch.bfloat16),
        "model.b": torch.tensor([1.5, -2.0, 3.25, 4.0], dtype=torch.float64),
        "optimizer.step": torch.tensor(11, dtype=torch.int64),
    }


def _rank_main(rank, world, port, out):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor, init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    full = expected_tensors()
    state = {
        "model": {
            "w": distribute_tensor(full["model.w"], mesh, [Shard(0)]),
            "e": distribute_tensor(full["model.e"], mesh, [Shard(1)]),
            "b": full["model.b"].clone(),  # replicated: every rank passes it, DCP writes it once
        },
        "optimizer": {"step": full["optimizer.step"].clone()},
        "step": 7,
        "hparams": {"lr": 0.5, "name": "tiny"},
    }
    assert isinstance(state["model"]["w"], DTensor)
    dcp.save(state, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


def write(directory, world):
    import torch.multiprocessing as mp
    from safetensors.torch import save_file

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mp.spawn(_rank_main, args=(world, port, os.path.join(directory, "ckpt")), nprocs=world, join=True)
    save_file(expected_tensors(), os.path.join(directory, "expected.safetensors"))


def check(directory, expected_path):
    import pickle

    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    expected = load_file(expected_path)
    state = {name: torch.zeros_like(t) - 99 for name, t in expected.items()}
    with open(os.path.join(directory, ".metadata"), "rb") as f:
        metadata = pickle.load(f)
    if "step" in metadata.state_dict_metadata:
        state["step"] = 0
    dcp.load(state, checkpoint_id=directory, no_dist=True)
    for name, want in expected.items():
        got = state[name]
        if got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got, want):
            print(f"tensor {name}: PyTorch loaded {got} but volt saved {want}")
            return 1
    if "step" in state and state["step"] != 7:
        print(f"byte item step: PyTorch loaded {state['step']!r}, expected 7")
        return 1
    print("ok", sorted(metadata.state_dict_metadata))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
