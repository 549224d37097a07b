"""Python side of optimizer_state_test: PyTorch's Adam resumed from volt's state, and volt resumed from
PyTorch's. Usage: optimizer_state_oracle.py step IN OUT | train OUT."""
import copy
import sys

import torch


def model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def main():
    mode = sys.argv[1]
    if mode == "step":
        # volt wrote {"weight", "bias", "optimizer"}: resume Adam from it and take one step with grad 1.
        saved = torch.load(sys.argv[2], weights_only=True)
        m = model()
        with torch.no_grad():
            m.weight.copy_(saved["weight"])
            m.bias.copy_(saved["bias"])
        opt = torch.optim.Adam(m.parameters())
        opt.load_state_dict(saved["optimizer"])
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        torch.save({"weight": m.weight.detach(), "bias": m.bias.detach()}, sys.argv[3])
    elif mode == "train":
        # Three Adam steps in PyTorch, saved for volt to resume; then the fourth, saved for comparison.
        m = model()
        opt = torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
        for i in range(3):
            for p in m.parameters():
                p.grad = torch.full_like(p, 0.5 * (i + 1))
            opt.step()
        state = {"weight": m.weight.detach().clone(), "bias": m.bias.detach().clone(), "optimizer": copy.deepcopy(opt.state_dict())}  # state_dict() shares the live tensors
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        state["weight_after"] = m.weight.detach()
        state["bias_after"] = m.bias.detach()
        torch.save(state, sys.argv[2])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
