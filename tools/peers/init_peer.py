"""Peer rows of `volt bench init`: the same GPT shape as volt::models::GPT, written in plain torch.nn and
built by plain PyTorch (build, then cast) or by Lightning's own Trainer.init_module, in this process.
Prints one JSON object. Run by `volt bench init`; not part of volt itself (volt never needs Python)."""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
}
PRECISION_DTYPES = {
    "64-true": torch.float64, "64": torch.float64, "32-true": torch.float32, "32": torch.float32,
    "16-true": torch.float16, "bf16-true": torch.bfloat16, "16-mixed": torch.float32, "16": torch.float32,
    "bf16-mixed": torch.float32, "bf16": torch.float32,
}


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """volt::models::GPT in Python: same modules, same tied head, same GPT-2 init after the layers' own."""

    def __init__(self, n_layer, n_head, n_embd, vocab_size=50257, block_size=1024):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, residual_std if name.endswith(".c_proj") else 0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.Embedding):
                    nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True,
                        choices=["pytorch_naive", "lightning_init_module", "lightning_empty_init"])
    parser.add_argument("--model", default="gpt2-xl", choices=sorted(PRESETS))
    parser.add_argument("--precision", default="bf16-true")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator in ("cuda", "gpu") else "cpu")
    config = PRESETS[args.model]

    if args.mode == "pytorch_naive":
        start = time.perf_counter()
        model = GPT(**config).to(device=device, dtype=PRECISION_DTYPES[args.precision])
    else:
        import lightning as L  # imported before the clock starts: its import is not init cost

        trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        start = time.perf_counter()
        with trainer.init_module(empty_init=args.mode == "lightning_empty_init"):
            model = GPT(**config)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_device_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else 0,
        "params": params,
        "param_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()
