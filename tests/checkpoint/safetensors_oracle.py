"""Test oracle for volt's safetensors layer (run by tests/checkpoint/safetensors_test.cpp with the venv's
Python): writes the reference file with safetensors.torch.save_file, or checks a file volt wrote.
The tensors are built the same way as reference_tensors() in the C++ test."""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def reference_tensors():
    base = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 7 - 1
    return {
        "f64": base.clone(),
        "f32": base.to(torch.float32).transpose(0, 2).contiguous(),
        "f16": base.to(torch.float16),
        "bf16": base.to(torch.bfloat16)[1],
        "i64": torch.arange(10, dtype=torch.int64) * 1000000007,
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3) - 3,
        "i16": torch.arange(5, dtype=torch.int16) * -300,
        "i8": torch.arange(7, dtype=torch.int8) - 3,
        "u8": torch.arange(9, dtype=torch.uint8) * 28,
        "bool": torch.arange(5) % 2 == 0,
        "layer.0.weight": base.to(torch.float32)[0],
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
    }


# One key: the reference keeps metadata in a Rust HashMap, so with several keys its own output order changes
# from run to run (seen: four runs, four orders) and only a one-key header can be compared byte for byte.
METADATA = {"format": "pt"}


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "write":
        save_file(reference_tensors(), path, metadata=METADATA)
    elif mode == "check":
        loaded = load_file(path)
        expected = reference_tensors()
        assert sorted(loaded) == sorted(expected), f"keys differ: {sorted(loaded)}"
        for name, tensor in expected.items():
            got = loaded[name]
            assert got.dtype == tensor.dtype and got.shape == tensor.shape, f"{name}: {got.dtype} {got.shape}"
            assert torch.equal(got, tensor), f"{name}: values differ"
        with safe_open(path, "pt") as f:
            assert f.metadata() == METADATA, f"metadata {f.metadata()}"
    print("oracle ok")


if __name__ == "__main__":
    main()
