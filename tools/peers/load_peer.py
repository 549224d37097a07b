"""Peer rows of `volt bench load`: the same GPT (init_peer.GPT, same parameter names as volt's) loaded from
the same checkpoint file by plain PyTorch (float32 build, torch.load into memory, load_state_dict, cast), by
Lightning's fastest documented path (Trainer.init_module(empty_init=True), torch.load(mmap=True),
load_state_dict(assign=True)), or by Lightning's own LightningModule.load_from_checkpoint inside
Trainer.init_module(empty_init=True), the pattern its docs give for large models. Prints one JSON object. Run by `volt bench load`; volt never needs Python."""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from init_peer import GPT, PRECISION_DTYPES, PRESETS  # noqa: E402


def read_state_dict(path, mmap):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)  # copies into memory; safetensors has no zero-copy torch API on CPU
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    return ckpt.get("state_dict", ckpt)


def lightning_gpt_class(L):
    """GPT as a LightningModule with the same parameter names (its layers are this module's children)."""

    class LitGPT(L.LightningModule):
        def __init__(self, n_layer, n_head, n_embd, vocab_size=50257, block_size=1024):
            super().__init__()
            self.save_hyperparameters()
            gpt = GPT(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size, block_size=block_size)
            for name, child in gpt.named_children():
                self.add_module(name, child)
            for name, p in gpt.named_parameters(recurse=False):
                self.register_parameter(name, p)

    return LitGPT


def touch(model):
    # One byte per page of every parameter, as volt's row does.
    total = 0
    for p in model.parameters():
        total += int(p.detach().reshape(-1).view(torch.uint8)[::4096].sum())
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True,
                        choices=["pytorch_naive", "lightning_empty_init", "lightning_load_from_checkpoint"])
    parser.add_argument("--model", default="gpt2-xl", choices=sorted(PRESETS))
    parser.add_argument("--precision", default="bf16-true")
    parser.add_argument("--file", required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--format", default="ckpt")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = PRESETS[args.model]
    dtype = PRECISION_DTYPES[args.precision]
    if args.mode == "pytorch_naive":
        start = time.perf_counter()
        model = GPT(**config)
        result = model.load_state_dict(read_state_dict(args.file, mmap=False), strict=False)
        model.to(dtype)
    elif args.mode == "lightning_load_from_checkpoint":
        import lightning as L  # imported before the clock starts
        trainer = L.Trainer(accelerator="cpu", devices=1, precision=args.precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        lit_gpt = lightning_gpt_class(L)
        start = time.perf_counter()
        with trainer.init_module(empty_init=True):
            # Built from the checkpoint's hyper_parameters, which `volt save-model` writes as GPT's arguments.
            # strict: it raises unless every key matched, so nothing is missing or unexpected below.
            model = lit_gpt.load_from_checkpoint(args.file, map_location="cpu", strict=True)
        result = type("Matched", (), {"missing_keys": [], "unexpected_keys": []})
    else:
        import lightning as L  # imported before the clock starts
        trainer = L.Trainer(accelerator="cpu", devices=1, precision=args.precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        start = time.perf_counter()
        with trainer.init_module(empty_init=True):
            model = GPT(**config)
        result = model.load_state_dict(read_state_dict(args.file, mmap=True), strict=False, assign=True)
    touched = touch(model)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "model_bytes": params * torch.empty(0, dtype=dtype).element_size(),
        "loaded": params and len(model.state_dict()) - len(result.missing_keys),
        "missing": len(result.missing_keys), "unexpected": len(result.unexpected_keys),
        "touch_sum": touched,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()
