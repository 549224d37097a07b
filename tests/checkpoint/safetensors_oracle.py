"""The reference side of tests/checkpoint/safetensors_test.cpp, run with the venv's Python.

    safetensors_oracle.py (write|check) PATH (with-metadata|without-metadata) [(write|check) PATH ...]

write saves reference_tensors() to PATH with safetensors.torch.save_file; check loads PATH (written by volt)
with safetensors.torch.load_file and compares every value and the metadata. Several jobs share one run
because importing torch takes seconds. Prints "oracle ok" and exits 0 when every job succeeds.
reference_tensors() must build exactly what the C++ test's reference_tensors() builds.
"""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def reference_tensors():
    # save_file refuses tensors that share memory: views are cloned (volt's writer takes the views).
    base = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 7 - 1
    base32 = base.to(torch.float32)
    return {
        "f64": base.clone(),
        # save_file refuses non-contiguous tensors; the C++ side passes the transpose itself.
        "f32.transposed": base32.transpose(0, 2).contiguous(),
        "f16": base.to(torch.float16),
        "bf16": base.to(torch.bfloat16)[1].clone(),
        "c64": torch.complex(base32, -2 * base32)[0].clone(),
        "i64": torch.arange(10, dtype=torch.int64) * 1000000007 - 4000000000,
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3) - 3,
        "i16": torch.arange(5, dtype=torch.int16) * -300,
        "i8": torch.arange(7, dtype=torch.int8) - 3,
        "u8": torch.arange(9, dtype=torch.uint8) * 28,
        "bool": torch.arange(5) % 2 == 0,
        # Names that sort differently by bytes than by letters, and names that need JSON escapes.
        "Upper": base32[0, 0].clone(),
        "layer.10.w\u00e9ight": base32[1, 2].clone(),
        "layer.9.weight": base32[0].clone(),
        'quote"back\\slash\ttab': torch.arange(3, dtype=torch.int8),
        "empty": torch.zeros(0, 3),
        "empty.i64": torch.zeros(2, 0, dtype=torch.int64),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "scalar.bool": torch.tensor(True),
    }


# One key only: the reference keeps metadata in a Rust HashMap whose iteration order changes from run to
# run, so only a one-key header is reproducible byte for byte. The key and value need JSON escapes.
METADATA = {'n\u00f6te "1"': 'line\nbreak\\ \x01\x1f\x7f \u00e9 \U0001F600 / </script>'}


def run(mode, path, metadata_flag):
    metadata = METADATA if metadata_flag == "with-metadata" else None
    if mode == "write":
        save_file(reference_tensors(), path, metadata=metadata)
        return
    assert mode == "check", f"unknown mode {mode}"
    loaded = load_file(path)
    expected = reference_tensors()
    assert sorted(loaded) == sorted(expected), f"{path}: names differ: {sorted(loaded)}"
    for name, tensor in expected.items():
        got = loaded[name]
        assert got.dtype == tensor.dtype, f"{name}: dtype {got.dtype}, expected {tensor.dtype}"
        assert got.shape == tensor.shape, f"{name}: shape {got.shape}, expected {tensor.shape}"
        assert torch.equal(got, tensor), f"{name}: values differ: {got} vs {tensor}"
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata, f"{path}: metadata {f.metadata()!r}, expected {metadata!r}"


def main():
    jobs = sys.argv[1:]
    assert jobs and len(jobs) % 3 == 0, __doc__
    for i in range(0, len(jobs), 3):
        run(*jobs[i : i + 3])
    print("oracle ok")


if __name__ == "__main__":
    main()
