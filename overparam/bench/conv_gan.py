"""Conv-GAN train step: our jitted trainer vs a straightforward PyTorch eager loop, same networks.

Both sides train the classic Radford DCGAN (``arch="dcgan"`` of overparam.bridge.nets:
transposed 4x4 convs with batch norm and ReLU in G, strided 4x4 convs with batch norm and
LeakyReLU(0.2) in D, no spectral norm) at 32x32x3, batch 64, alternating GDA with n_disc = 2
discriminator steps (each on a fresh batch, D run on the concatenation [G(z); x]) per generator
step, the non-saturating loss and Adam, on the same random images. PyTorch's networks are
written here layer by layer with the same shapes; their parameter counts are printed and
asserted equal to ours (the test suite also checks that, with our weights copied in, both
compute the same function).

Timing: warm-up excluded (ours: the first host call, which compiles; PyTorch: ``--warmup``
generator steps), then ``--steps`` generator steps on each side (ours in host calls of
``--steps-per-call`` scanned steps, the trainer's normal mode, recording losses and singular
values once per call). images/s = batch x generator steps / s (each generator step also takes
n_disc discriminator steps). Needs ``pip install overparam[bench]`` (torch); without torch it
says so and exits 0.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

DESCRIPTION = "DCGAN 32x32 train step (batch 64, n_disc 2, Adam): our trainer vs PyTorch eager, images/s"


# -- the PyTorch reference ----------------------------------------------------------------------------
def torch_dcgan(resolution: int = 32, channels: int = 3, width: float = 1.0, latent_dim: int = 100):
    """(G, D) as torch modules with the layer names and shapes of ``nets.DCGANGenerator/Discriminator``."""
    import torch
    from torch import nn

    from overparam.bridge.nets import channels as ch, n_stages

    k = n_stages(resolution)

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            c = [ch(512 // 2**i, width) for i in range(k)]
            self.conv0 = nn.ConvTranspose2d(latent_dim, c[0], 4, 1, 0, bias=False)
            self.bn0 = nn.BatchNorm2d(c[0], eps=1e-5, momentum=0.1)
            for i in range(1, k):
                setattr(self, f"conv{i}", nn.ConvTranspose2d(c[i - 1], c[i], 4, 2, 1, bias=False))
                setattr(self, f"bn{i}", nn.BatchNorm2d(c[i], eps=1e-5, momentum=0.1))
            self.out = nn.ConvTranspose2d(c[-1], channels, 4, 2, 1, bias=True)

        def forward(self, z):
            x = z.reshape(z.shape[0], -1, 1, 1)
            for i in range(k):
                x = torch.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            return torch.tanh(self.out(x))

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            cin = channels
            for i in range(k):
                c = ch(512 // 2 ** (k - 1 - i), width)
                setattr(self, f"conv{i}", nn.Conv2d(cin, c, 4, 2, 1, bias=(i == 0)))
                if i > 0:
                    setattr(self, f"bn{i}", nn.BatchNorm2d(c, eps=1e-5, momentum=0.1))
                cin = c
            self.out = nn.Conv2d(cin, 1, 4, 1, 0, bias=True)

        def forward(self, x):
            for i in range(k):
                x = getattr(self, f"conv{i}")(x)
                if i > 0:
                    x = getattr(self, f"bn{i}")(x)
                x = nn.functional.leaky_relu(x, 0.2)
            return self.out(x).reshape(x.shape[0])

    return G(), D()


def copy_flax_to_torch(params: Any, module) -> None:
    """Load flax parameters into the torch module of :func:`torch_dcgan` (same names).

    Conv kernels (kh, kw, in, out) -> (out, in, kh, kw). ``lax.conv_transpose`` without kernel
    transposition is the convolution of the stride-dilated input with the kernel as stored, and
    torch's ConvTranspose2d is the one with the spatially flipped kernel, so transposed kernels
    are flipped and stored as (in, out, kh, kw). Batch-norm scale/bias -> weight/bias."""
    import torch

    with torch.no_grad():
        for name, leaves in params.items():
            layer = getattr(module, name)
            if "kernel" in leaves:
                k = np.asarray(leaves["kernel"])
                if isinstance(layer, torch.nn.ConvTranspose2d):
                    w = k[::-1, ::-1].transpose(2, 3, 0, 1)
                else:
                    w = k.transpose(3, 2, 0, 1)
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                if "bias" in leaves:
                    layer.bias.copy_(torch.from_numpy(np.array(leaves["bias"], np.float32)))
            else:
                layer.weight.copy_(torch.from_numpy(np.array(leaves["scale"], np.float32)))
                layer.bias.copy_(torch.from_numpy(np.array(leaves["bias"], np.float32)))


def torch_param_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def torch_trainer(G, D, data, batch: int, n_disc: int, latent_dim: int, lr: float, b1: float, b2: float, device):
    """A plain eager step: n_disc D steps on [G(z).detach(); x], then one G step (non-saturating)."""
    import torch
    import torch.nn.functional as F

    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(b1, b2))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(b1, b2))
    n = data.shape[0]

    def step():
        for _ in range(n_disc):
            real = data[torch.randperm(n, device=device)[:batch]]
            with torch.no_grad():
                fake = G(torch.randn(batch, latent_dim, device=device))
            logits = D(torch.cat([fake, real]))
            loss_d = F.softplus(logits[batch:].neg()).mean() + F.softplus(logits[:batch]).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        logits = D(G(torch.randn(batch, latent_dim, device=device)))
        loss_g = F.softplus(logits.neg()).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return loss_d, loss_g

    return step


# -- the benchmark ---------------------------------------------------------------------------------
def _ours(args, data: np.ndarray):
    from overparam.bridge import nets
    from overparam.bridge.trainer import TrainConfig, Trainer

    spc = args.steps_per_call
    calls = max(1, -(-args.steps // spc))
    cfg = TrainConfig(out_dir="", arch="dcgan", width=args.width, latent_dim=100, sn_d=False, sn_g=False,
                      loss="non_saturating", opt_g="adam", opt_d="adam", lr_g=args.lr, lr_d=args.lr, b1=args.b1,
                      b2=args.b2, scheme="alternating", order="d_first", n_disc=args.n_disc, batch_size=args.batch,
                      ema=False, steps=spc * (calls + 1), steps_per_call=spc, log_every=spc, ckpt_every=spc,
                      seed=0, devices=1)
    tr = Trainer(cfg, data)
    t0 = time.perf_counter()
    tr.train(stop_at=spc, progress=False)  # warm-up: compile + the first call
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr.train(progress=False)
    secs = time.perf_counter() - t0
    return {"params_g": nets.param_count(tr.state.gen), "params_d": nets.param_count(tr.state.disc),
            "steps": spc * calls, "seconds": secs, "warmup_s": warm, "status": tr.status}


def _torch(args, data: np.ndarray):
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and args.torch_device != "cpu" else "cpu")
    torch.manual_seed(0)
    G, D = torch_dcgan(32, 3, args.width, 100)
    G, D = G.to(device), D.to(device)
    x = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2))).to(device)
    step = torch_trainer(G, D, x, args.batch, args.n_disc, 100, args.lr, args.b1, args.b2, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm = time.perf_counter() - t0
    steps = max(1, -(-args.steps // args.steps_per_call)) * args.steps_per_call
    t0 = time.perf_counter()
    for _ in range(steps):
        loss_d, loss_g = step()
    sync()
    secs = time.perf_counter() - t0
    finite = bool(torch.isfinite(loss_d).item() and torch.isfinite(loss_g).item())
    return {"params_g": torch_param_count(G), "params_d": torch_param_count(D), "steps": steps, "seconds": secs,
            "warmup_s": warm, "status": "completed" if finite else "non-finite", "device": str(device),
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m overparam.bench conv-gan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="generator steps timed on each side (default 20)")
    p.add_argument("--steps-per-call", type=int, default=5, help="our scanned steps per host call (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="PyTorch warm-up generator steps (default 3)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-disc", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (1 = Radford's DCGAN)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--b1", type=float, default=0.5)
    p.add_argument("--b2", type=float, default=0.999)
    p.add_argument("--n-data", type=int, default=1024, help="random training images (32x32x3)")
    p.add_argument("--torch-device", default="auto", help="auto (cuda when available) or cpu")
    args = p.parse_args(argv)
    for name in ("steps", "steps_per_call", "batch", "n_disc", "n_data"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("conv-gan benchmark skipped: PyTorch is not installed (pip install 'overparam[bench]', e.g. "
              "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
        return 0
    import jax

    data = np.tanh(np.random.default_rng(0).normal(size=(args.n_data, 32, 32, 3))).astype(np.float32)
    print(f"device: JAX {jax.devices()[0].device_kind} ({jax.default_backend()}, jax {jax.__version__}); "
          f"torch {torch.__version__}")
    print(f"DCGAN 32x32x3, width {args.width:g}, batch {args.batch}, n_disc {args.n_disc}, Adam(lr {args.lr:g}, "
          f"b1 {args.b1:g}, b2 {args.b2:g}), non-saturating loss")
    ours = _ours(args, data)
    ref = _torch(args, data)
    print(f"torch device: {ref['device']} ({ref['threads']} threads)")
    rows = []
    for name, r in (("ours (jit + lax.scan)", ours), ("PyTorch eager", ref)):
        gs = r["steps"] / r["seconds"]
        rows.append({"impl": name, "params G": r["params_g"], "params D": r["params_d"], "warm-up s": r["warmup_s"],
                     "steps timed": r["steps"], "seconds": r["seconds"], "gen steps/s": gs,
                     "images/s": gs * args.batch, "status": r["status"]})
    from overparam.studies.common import format_table

    print(format_table(rows, list(rows[0]), floatfmt=".4g"))
    if (ours["params_g"], ours["params_d"]) != (ref["params_g"], ref["params_d"]):
        print(f"error: parameter counts differ: ours G {ours['params_g']} D {ours['params_d']}, "
              f"PyTorch G {ref['params_g']} D {ref['params_d']}")
        return 1
    ratio = rows[0]["images/s"] / rows[1]["images/s"]
    print(f"parameter counts equal (G {ours['params_g']:,}, D {ours['params_d']:,}); "
          f"images/s ratio ours / PyTorch eager = {ratio:.2f}x on {jax.default_backend()} "
          f"(images/s = batch x generator steps / s; warm-up excluded)")
    return 0
