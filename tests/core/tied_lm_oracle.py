"""Python side of the tied-weights and non-persistent-buffer tests (tests/core/tiny_lm.h is the C++ twin):
a small language model whose output head is tied to its token embedding and whose attention keeps its
causal mask in a non-persistent buffer. Runs on the venv's torch 2.x and on Debian's 1.13.

Usage: tied_lm_oracle.py state_dict OUT | train IN OUT
  state_dict: torch.manual_seed(0), save the model's state_dict() (an OrderedDict, tied names sharing storage)
  train: load IN's "state_dict" (strict), take IN's "steps" AdamW steps on IN's "idx"/"targets" with
         clip_grad_norm_ over model.parameters(); save the norms, the state_dict and the optimizer's state.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, DIM, BLOCK = 11, 6, 5


class CausalMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mask", torch.ones(BLOCK, BLOCK).tril(), persistent=False)
        self.register_buffer("scale", torch.tensor(0.5))
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        t = x.size(1)
        att = (x @ x.transpose(1, 2)) * self.scale
        att = att.masked_fill(self.mask[:t, :t] == 0, float("-inf")).softmax(-1)
        return att @ self.proj(x)


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, DIM)
        self.mix = CausalMix()
        self.ln = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight
        self.register_buffer("positions", torch.arange(BLOCK), persistent=False)

    def forward(self, idx):
        x = self.wte(idx) + self.positions[: idx.size(1)].unsqueeze(-1).to(torch.float32) * 0.01
        return self.lm_head(self.ln(x + self.mix(x)))


def main():
    mode = sys.argv[1]
    if mode == "state_dict":
        torch.manual_seed(0)
        torch.save(TinyLM().state_dict(), sys.argv[2])
    elif mode == "train":
        given = torch.load(sys.argv[2])
        model = TinyLM()
        model.load_state_dict(given["state_dict"], strict=True)
        assert model.lm_head.weight is model.wte.weight
        opt = torch.optim.AdamW(model.parameters(), lr=given["lr"], weight_decay=0.1)
        norms = []
        for _ in range(given["steps"]):
            opt.zero_grad()
            logits = model(given["idx"])
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), given["targets"].reshape(-1))
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), given["max_norm"])))
            opt.step()
        torch.save({"norms": torch.tensor(norms, dtype=torch.float64), "state_dict": model.state_dict(),
                    "optimizer": opt.state_dict()}, sys.argv[3])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
