"""A PyTorch statement of CF-Net, timed the way `benchmarks.run` times the JAX one.

The reference for the CF-Net training-speed targets: the architecture of Deng et al. (IEEE TIP
2021) as the public PyTorch code builds it (FEB, SRB, T coupled feedback blocks, a REC per
block output; 64 features, 6 projection groups), written here from the paper and asserted to have
the public code's parameter count (17,048,297 at x2, 28,975,849 at x4). One training step =
forward + the eq. 19 loss (sum of 1 - SSIM, window 7, sigma 1.5, data range 255, valid) +
backward + Adam, on random LR/HR images, batch 1.

Optional and never run by the tests: it needs torch, which the project does not depend on.

    PYTHON_WITH_TORCH benchmarks/torch_reference.py --scale 2 --lr 64 --reps 3 --threads 2

prints one JSON object ({"skipped": reason} when torch is absent, exit 0).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

PARAMS = {2: 17_048_297, 4: 28_975_849}
GEOMETRY = {2: (6, 2, 2), 4: (8, 4, 2)}  # projection kernel, stride, pad


def build(torch, scale: int, features: int = 64, groups: int = 6, steps: int = 3):
    nn, F = torch.nn, torch.nn.functional
    k, s, p = GEOMETRY[scale]

    class Unit(nn.Module):
        """conv (or transposed conv) + optional PReLU (one slope, init 0.2)."""

        def __init__(self, cin, cout, ksize, stride=1, pad=0, act=True, transpose=False):
            super().__init__()
            conv = nn.ConvTranspose2d if transpose else nn.Conv2d
            self.conv = conv(cin, cout, ksize, stride, pad)
            self.act = nn.PReLU(1, 0.2) if act else nn.Identity()

        def forward(self, x):
            return self.act(self.conv(x))

    class Groups(nn.Module):
        """Up/down projection groups with dense 1x1 transitions; optional re-guide after the
        3rd group; 1x1 over the new LR features."""

        def __init__(self, reguide: bool):
            super().__init__()
            f = features
            self.uptran = nn.ModuleList([Unit((g + 1) * f, f, 1) for g in range(1, groups)])
            self.downtran = nn.ModuleList([Unit((g + 1) * f, f, 1) for g in range(1, groups)])
            self.up = nn.ModuleList([Unit(f, f, k, s, p, transpose=True) for _ in range(groups)])
            self.down = nn.ModuleList([Unit(f, f, k, s, p) for _ in range(groups)])
            self.reguide = Unit(2 * f, f, 1) if reguide else None
            self.out = Unit(groups * f, f, 1)

        def forward(self, x, guide=None):
            lr, hr = [x], []
            for g in range(groups):
                h = self.uptran[g - 1](torch.cat(lr, 1)) if g else x
                hr.append(self.up[g](h))
                low = self.downtran[g - 1](torch.cat(hr, 1)) if g else hr[0]
                low = self.down[g](low)
                if self.reguide is not None and g == 2:
                    low = self.reguide(torch.cat([low, guide], 1))
                lr.append(low)
            return self.out(torch.cat(lr[1:], 1))

    class Branch(nn.Module):
        def __init__(self, feb_act: bool):
            super().__init__()
            f = features
            self.feb = nn.Sequential(Unit(3, 4 * f, 3, 1, 1, act=feb_act), Unit(4 * f, f, 1))
            self.srb_in, self.srb = Unit(f, f, 1), Groups(False)
            self.cfb_in = nn.ModuleList([Unit(3 * f, f, 1) for _ in range(steps)])
            self.cfb = nn.ModuleList([Groups(True) for _ in range(steps)])
            self.rec = nn.ModuleList(
                [nn.Sequential(Unit(f, f, k, s, p, transpose=True), Unit(f, 3, 3, 1, 1, act=False))
                 for _ in range(steps + 1)])

    class CFNet(nn.Module):
        def __init__(self):
            super().__init__()
            # The public code's quirk: no PReLU after the under-exposed branch's first conv.
            self.over, self.under = Branch(True), Branch(False)

        def forward(self, over, under):
            xo, xu = 2 * over - 1, 2 * under - 1
            up_o = F.interpolate(xo, scale_factor=scale, mode="bilinear", align_corners=False)
            up_u = F.interpolate(xu, scale_factor=scale, mode="bilinear", align_corners=False)
            fo, fu = self.over.feb(xo), self.under.feb(xu)
            go, gu = self.over.srb(self.over.srb_in(fo)), self.under.srb(self.under.srb_in(fu))
            out = {"srb_over": torch.clamp(self.over.rec[0](go) + up_o, -1, 1),
                   "srb_under": torch.clamp(self.under.rec[0](gu) + up_u, -1, 1),
                   "steps_over": [], "steps_under": []}
            for t in range(steps):
                go_new = self.over.cfb[t](self.over.cfb_in[t](torch.cat([fo, go, gu], 1)), gu)
                gu_new = self.under.cfb[t](self.under.cfb_in[t](torch.cat([fu, gu, go], 1)), go)
                go, gu = go_new, gu_new
                out["steps_over"].append(torch.clamp(self.over.rec[t + 1](go) + up_o, -1, 1))
                out["steps_under"].append(torch.clamp(self.under.rec[t + 1](gu) + up_u, -1, 1))
            return out

    return CFNet()


def ssim_loss(torch, a, b):
    """1 - SSIM on [0, 255] images (window 7, sigma 1.5, K = (0.01, 0.03), valid), per channel."""
    F = torch.nn.functional
    t = torch.arange(7, dtype=torch.float32) - 3
    g = torch.exp(-(t**2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(3, 1, 7, 7).contiguous()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def f(x):
        return F.conv2d(x, w, groups=3)

    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return 1 - s.mean()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, choices=(2, 4), default=2)
    ap.add_argument("--lr", type=int, default=64, help="LR patch size")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(json.dumps({"skipped": "torch is not installed in this interpreter"}))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build(torch, args.scale)
    params = sum(p.numel() for p in net.parameters())
    if params != PARAMS[args.scale]:
        raise SystemExit(f"torch_reference: {params} parameters, expected {PARAMS[args.scale]}")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    b, lr, hr = args.batch, args.lr, args.lr * args.scale
    over_lr, under_lr = torch.rand(b, 3, lr, lr), torch.rand(b, 3, lr, lr)
    over_hr, under_hr, label = (torch.rand(b, 3, hr, hr) for _ in range(3))

    def to255(x):
        return (x + 1) * 127.5

    def step():
        opt.zero_grad(set_to_none=True)
        out = net(over_lr, under_lr)
        loss = ssim_loss(torch, to255(out["srb_over"]), over_hr * 255)
        loss = loss + ssim_loss(torch, to255(out["srb_under"]), under_hr * 255)
        for y in out["steps_over"] + out["steps_under"]:
            loss = loss + ssim_loss(torch, to255(y), label * 255)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step()  # warm-up
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "torch": torch.__version__, "threads": args.threads, "scale": args.scale, "lr": lr,
        "batch": b, "params": params, "train_seconds": statistics.median(times), "times": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
