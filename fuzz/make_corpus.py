#!/usr/bin/python3
"""Writes the seed corpus of volt's checkpoint fuzzers: fuzz/corpus/{torch_file,safetensors}/.

    /usr/bin/python3 fuzz/make_corpus.py [--venv ~/.cache/volt/venv/bin/python]

Run once; its outputs are checked in. Torch files come from Debian's torch 1.13 (torch.save, pickle
protocols 2, 4 and 5) and, when the venv's python is there, from torch 2.x; safetensors files are written
byte for byte as the reference writer lays them out (and one by the safetensors package itself, from the
venv). A few hand-crafted bad files (names starting with bad_) sit beside the valid ones. Every file is a
few KB at most: the fuzzers' mutations work best on small inputs.
"""
import argparse
import collections
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no fuzz/__pycache__ in the tree
from mutate import Zip, write_zip  # noqa: E402

torch.manual_seed(0)


def small(*shape, dtype=torch.float32):
    numel = 1
    for s in shape:
        numel *= s
    values = torch.arange(numel, dtype=torch.float64).reshape(shape) * 0.5 - 1
    if dtype == torch.bool:
        return values > 0
    return values.to(dtype)


# ------------------------------------------------------------------------------------------ torch files


def torch_files(out):
    def save(name, value, **kwargs):
        path = os.path.join(out, name)
        torch.save(value, path, **kwargs)
        return path

    save("tensor_dict.pt", {"weight": small(2, 3), "bias": small(3)})
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128]
    save("all_dtypes.pt", {str(d).replace("torch.", ""): small(3, dtype=d) for d in dtypes})
    base = small(4, 6)
    save("views.pt", {
        "base": base,
        "slice": base[1:3],             # offset into the storage
        "columns": base[:, 2:5],        # non-contiguous
        "transposed": base.t(),
        "strided": base[::2, ::3],
        "expanded": small(1, 3).expand(4, 3),  # stride 0
        "scalar_view": base[2, 3],      # 0-dim view with an offset
        "flat": base.view(-1)[5:17],
    })
    shared = small(5)
    save("empty.pt", {
        "empty": torch.empty(0),
        "empty_2d": torch.empty(3, 0),
        "empty_view": shared[5:],       # zero elements at the end of a storage
        "scalar": torch.tensor(2.5),
        "one": torch.ones(1, 1, 1),
        "empty_list": [], "empty_dict": {}, "empty_tuple": (),
    })
    save("nested.pt", [
        {"ints": [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, 2**62, -2**63, 2**63 - 1],
         "floats": (0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e-300),
         "text": "h\u00e9llo \u4e16\u754c \U0001F600", "bytes": b"\x00\xff\x80 bytes", "none": None,
         "flags": (True, False), "set": {1, 2}, "frozen": frozenset({"a"})},
        {1: "int key", (1, "a"): "tuple key", 2.5: "float key", None: "none key", True: "bool key"},
        ((((("deep",),),),),),
        [small(2), [small(1, dtype=torch.int64)]],
    ])
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    state = model.state_dict()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    lightning = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
            "monitor": "val_loss", "best_model_score": torch.tensor(0.25), "best_model_path": "/tmp/best.ckpt",
            "kth_best_model_path": "", "dirpath": "/tmp"}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-3, "layers": [3, 2], "path": pathlib.PurePosixPath("/data/train"),
                             "counter": collections.Counter("abca")},
    }
    save("lightning.ckpt", lightning)
    save("parameters.pt", {"p": torch.nn.Parameter(small(2, 2)), "frozen": torch.nn.Parameter(small(2), requires_grad=False),
                           "module_state": model.state_dict(keep_vars=True)})
    nested = {"a": small(2, 2), "b": [b"bytes", {"x": (1, 2.5, None)}], "c": {1, 2}, "d": frozenset({3})}
    save("protocol4.pt", nested, pickle_protocol=4)
    save("protocol5.pt", dict(nested, e=small(3, dtype=torch.bfloat16)[1:]), pickle_protocol=5)
    ordered = collections.OrderedDict([("z", small(1)), ("a", small(2))])
    ordered.extra_attribute = {"version": 2}  # a BUILD on the OrderedDict, as state_dict()'s _metadata
    save("ordered_dict.pt", ordered)

    # The same archives rewritten: ZIP64 records, and data that is not aligned (copied on read).
    with open(os.path.join(out, "tensor_dict.pt"), "rb") as f:
        records = Zip(f.read()).records()
    with open(os.path.join(out, "zip64.pt"), "wb") as f:
        f.write(write_zip(records, zip64=True))
    with open(os.path.join(out, "unaligned.pt"), "wb") as f:
        f.write(write_zip(records, align=1))

    # Hand-crafted bad files.
    with open(os.path.join(out, "bad_bare_pickle.pt"), "wb") as f:
        pickle.dump({"a": 1}, f, protocol=2)
    with open(os.path.join(out, "bad_dup_entry.pt"), "wb") as f:
        f.write(write_zip(records + records[:1]))
    pkl = dict(records)[b"tensor_dict/data.pkl"]
    # The numel of the first storage, BININT1 6, made 2**62 (LONG1).
    at = pkl.index(b"cpu") + 3 + 2  # after BINUNICODE 'cpu' and its BINPUT
    assert pkl[at:at + 1] == b"K", pkl[at:at + 4]
    bad = pkl[:at] + b"\x8a\x08" + (1 << 62).to_bytes(8, "little") + pkl[at + 2:]
    with open(os.path.join(out, "bad_storage_numel.pt"), "wb") as f:
        f.write(write_zip([(n, bad if n.endswith(b"data.pkl") else d) for n, d in records]))
    # A view whose size (2, 3) became (3, 3): past the end of its 6-element storage.
    bad = pkl.replace(b"K\x02K\x03\x86", b"K\x03K\x03\x86", 1)
    assert bad != pkl
    with open(os.path.join(out, "bad_view_past_storage.pt"), "wb") as f:
        f.write(write_zip([(n, bad if n.endswith(b"data.pkl") else d) for n, d in records]))
    # Shared references that double at each of 40 levels, used as a dict key.
    bomb = b"\x80\x02}X\x01\x00\x00\x00a" + b"2\x86" * 40 + b"Ns."
    with open(os.path.join(out, "bad_shared_reference_key.pt"), "wb") as f:
        f.write(write_zip([("archive/data.pkl", bomb), ("archive/version", b"3\n")]))
    with open(os.path.join(out, "bad_truncated.pt"), "wb") as f:
        with open(os.path.join(out, "views.pt"), "rb") as g:
            data = g.read()
        f.write(data[:len(data) * 2 // 3])


TORCH2_SCRIPT = r"""
import sys, torch
class Marked(torch.Tensor):
    pass
torch.manual_seed(0)
out = sys.argv[1]
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
torch.save({"base": base, "view": base[1:, ::2], "half": base.half()[0], "bf16": base.bfloat16().t(),
            "param": torch.nn.Parameter(base[0].clone()), "marked": base[2].clone().as_subclass(Marked),
            "ints": torch.tensor([1, -2, 3], dtype=torch.int64), "flags": torch.tensor([True, False]),
            "meta": {"step": 7, "name": "torch2"}}, out + "/torch2.pt")
torch.save(torch.nn.Linear(2, 2).state_dict(), out + "/torch2_state_dict.pt")
"""

REFERENCE_SCRIPT = r"""
import sys, torch
from safetensors.torch import save_file
save_file({"b": torch.arange(4, dtype=torch.int16), "a": torch.ones(2, 2, dtype=torch.bfloat16),
           "z": torch.zeros(0, 3), "u": torch.tensor([7], dtype=torch.uint8)},
          sys.argv[1] + "/reference_written.safetensors", metadata={"format": "pt"})
"""


# ----------------------------------------------------------------------------------------- safetensors

ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
         "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
NAMES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
         torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.complex64: "C64",
         torch.float64: "F64", torch.int64: "I64"}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    if t.dtype == torch.complex64:
        t = torch.view_as_real(t)
    return t.numpy().tobytes()


def safetensors_bytes(tensors, metadata=None, pad=True, extra_fields=None):
    """The reference writer's layout: dtype descending, then name; header padded with spaces to 8 bytes."""
    items = sorted(tensors.items(), key=lambda kv: (-ORDER.index(NAMES[kv[1].dtype]), kv[0]))
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    body = b""
    for name, t in items:
        data = tensor_bytes(t)
        entry = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        if extra_fields:
            entry = dict(extra_fields, **entry)
        header[name] = entry
        offset += len(data)
        body += data
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + body


def safetensors_files(out):
    def write(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    write("simple.safetensors", safetensors_bytes({"weight": small(2, 3), "bias": small(3)}))
    dtypes = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
              torch.bfloat16, torch.float32, torch.float64, torch.complex64]
    write("all_dtypes.safetensors", safetensors_bytes({NAMES[d].lower(): small(3, dtype=d) for d in dtypes}))
    write("no_tensors.safetensors", safetensors_bytes({}))
    write("empty_tensors.safetensors", safetensors_bytes({"empty": torch.empty(0), "empty_2d": torch.empty(3, 0),
                                                          "scalar": torch.tensor(1.5), "one": torch.ones(1)}))
    write("metadata.safetensors", safetensors_bytes({"w": small(4)}, metadata={"format": "pt", "note": "h\u00e9llo"}))
    write("unaligned.safetensors", safetensors_bytes({"a": small(3, dtype=torch.float64), "b": small(5, dtype=torch.int8)},
                                                     pad=False))
    write("unknown_fields.safetensors", safetensors_bytes({"w": small(2, 2)},
                                                          extra_fields={"zz": {"nested": [1, [2, {"x": None}]]}, "q": 1.5}))
    write("many_small.safetensors", safetensors_bytes({f"layer.{i}.w": small(i % 3 + 1, dtype=dtypes[i % len(dtypes)])
                                                       for i in range(24)}))
    header = b'{"__metadata__":null,"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    write("metadata_null.safetensors", struct.pack("<Q", len(header)) + header + tensor_bytes(small(2)))
    # Hand-crafted bad files.
    good = safetensors_bytes({"a": small(2), "b": small(2)})
    write("bad_header_length.safetensors", struct.pack("<Q", (1 << 64) - 1) + good[8:])
    n = struct.unpack_from("<Q", good)[0]
    header = json.loads(good[8:8 + n])
    header["b"]["data_offsets"] = [4, 12]
    text = json.dumps(header, separators=(",", ":")).encode()
    write("bad_overlap.safetensors", struct.pack("<Q", len(text)) + text + good[8 + n:])
    header = b'{"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}'
    write("bad_f8.safetensors", struct.pack("<Q", len(header)) + header + b"\x01\x02")
    header = b'{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}'
    write("bad_huge_shape.safetensors", struct.pack("<Q", len(header)) + header + b"\0" * 16)
    header = b'{"x":' + b"[" * 130 + b"]" * 130 + b"}"
    write("bad_deep.safetensors", struct.pack("<Q", len(header)) + header)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=os.path.expanduser("~/.cache/volt/venv/bin/python"))
    args = parser.parse_args()
    for sub in ("torch_file", "safetensors"):
        os.makedirs(os.path.join(HERE, "corpus", sub), exist_ok=True)
    torch_out = os.path.join(HERE, "corpus", "torch_file")
    torch_files(torch_out)
    safetensors_files(os.path.join(HERE, "corpus", "safetensors"))
    if os.path.exists(args.venv):
        subprocess.run([args.venv, "-c", TORCH2_SCRIPT, torch_out], check=True)
        subprocess.run([args.venv, "-c", REFERENCE_SCRIPT, os.path.join(HERE, "corpus", "safetensors")], check=True)
    else:
        print(f"make_corpus.py: no {args.venv}; skipped the torch 2.x and safetensors-package files")
    for sub in ("torch_file", "safetensors"):
        folder = os.path.join(HERE, "corpus", sub)
        sizes = {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}
        print(f"{sub}: {len(sizes)} files, {sum(sizes.values())} bytes; largest {max(sizes.values())}")


if __name__ == "__main__":
    main()
