"""Benchmark (a quick look): which latent denoiser reaches the best FD per CPU minute?

Trains only the denoiser, for --minutes of wall clock, on latents of a KL autoencoder (the one in
--ldm, a trained latent diffusion run, or a fresh one trained here with --kl), then draws --n
samples with DPM-Solver++ 20 steps, decodes them and measures FD etc. in lenet-mnist features
against --n test images (FD at n=2,000 reads higher than at 10,000). Appends one row per run to
bench/results/latent_denoisers.json and prints it. The rows recorded there (stop 23):

    python bench/latent_denoisers.py --net unet --ldm runs/ldm2-full                  # FD 119.2
    python bench/latent_denoisers.py --net unet --kl 0.01                              # 103.9
    python bench/latent_denoisers.py --net unet --kl 0.1                               # 116.6
    python bench/latent_denoisers.py --net unet --ldm runs/ldm2-full --minsnr 5        # 98.7
    python bench/latent_denoisers.py --net mlp --batch 256 --ldm runs/ldm2-full        # 154.8

(runs/ldm2-full: `genlab train ldm-mnist model.latent_channels=2 steps=5000 --out runs/ldm2-full`.)
"""
import argparse, copy, json, math, os, time
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
import genlab
from genlab.data import load_image_data
from genlab.evaluation import real_images, sample_quality_metrics
from genlab.metrics.features import load_feature_extractor
from genlab.models.autoencoder import KLAutoencoder
from genlab.sampling.diffusion import make_scheduler, denoise, alphas_cumprod

p = argparse.ArgumentParser()
p.add_argument("--net", default="unet", choices=["unet", "mlp"])
p.add_argument("--ldm", default=str(Path("runs") / "ldm2-full"), help="a trained latent run whose autoencoder to use")
p.add_argument("--width", type=int, default=1024)
p.add_argument("--depth", type=int, default=4)
p.add_argument("--channels", default="64")
p.add_argument("--lpb", type=int, default=2)
p.add_argument("--minutes", type=float, default=5)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--kl", type=float, default=None, help="train a fresh AE with this kl weight")
p.add_argument("--latent-channels", type=int, default=2)
p.add_argument("--ae-steps", type=int, default=1200)
p.add_argument("--ae-batch", type=int, default=128)
p.add_argument("--use-mean", action="store_true", help="train on posterior means, not draws")
p.add_argument("--schedule", default="linear")
p.add_argument("--pred", default="epsilon")
p.add_argument("--ema", type=float, default=0.999)
p.add_argument("--n", type=int, default=2000)
p.add_argument("--tag", default="")
p.add_argument("--minsnr", type=float, default=0.0, help="min-SNR-gamma loss weighting (0: off)")
a = p.parse_args()
torch.manual_seed(0)

data = load_image_data({"name": "mnist", "scale": "symmetric"})
train_x = data.split("train").images.float().div(255) * 2 - 1  # [N,1,28,28]
print("train", train_x.shape, flush=True)

if a.kl is None:
    ldm = genlab.load(a.ldm)
    ae = ldm.autoencoder
else:
    ae = KLAutoencoder(1, a.latent_channels, (32, 64), 8)
    # trained here each time (about 4 minutes on 2 cores)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    t0 = time.time()
    g = torch.Generator().manual_seed(0)
    for s in range(a.ae_steps):
        idx = torch.randint(len(train_x), (a.ae_batch,), generator=g)
        x = train_x[idx]
        noise = torch.randn(a.ae_batch, a.latent_channels, 7, 7)
        loss, rec = ae.loss(x, a.kl, noise)
        opt.zero_grad(); loss.backward(); opt.step()
        if s % 200 == 0:
            print(f"ae {s} loss {loss.item():.3f} rec {rec.item():.3f} {time.time()-t0:.0f}s", flush=True)
    print(f"ae trained in {time.time()-t0:.0f}s", flush=True)
ae.eval()
for q in ae.parameters():
    q.requires_grad_(False)

with torch.no_grad():
    means, logvars = [], []
    for i in range(0, len(train_x), 1000):
        m, lv = ae.posterior(train_x[i:i + 1000])
        means.append(m); logvars.append(lv)
    mean = torch.cat(means); std = (0.5 * torch.cat(logvars)).exp()
    z = mean + std * torch.randn_like(mean)
    scale = 1.0 / z.std().item()
print(f"latent std {1/scale:.3f}, posterior std mean {std.mean():.4f}, mean-std {mean.std():.3f}", flush=True)
shape = tuple(mean.shape[1:])
D = math.prod(shape)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


class Block(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.norm = nn.LayerNorm(w)
        self.fc1 = nn.Linear(w, 2 * w)
        self.temb = nn.Linear(w, 2 * w)
        self.fc2 = nn.Linear(2 * w, w)

    def forward(self, h, e):
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.temb(e)))


class MLP(nn.Module):
    def __init__(self, D, w, depth):
        super().__init__()
        self.inp = nn.Linear(D, w)
        self.t = nn.Sequential(nn.Linear(128, w), nn.SiLU(), nn.Linear(w, w))
        self.blocks = nn.ModuleList([Block(w) for _ in range(depth)])
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, D)
        nn.init.zeros_(self.out.weight); nn.init.zeros_(self.out.bias)

    def forward(self, x, t):
        e = F.silu(self.t(timestep_embedding(t, 128)))
        h = self.inp(x.flatten(1))
        for b in self.blocks:
            h = b(h, e)
        return self.out(self.norm(h)).view_as(x)


if a.net == "mlp":
    net = MLP(D, a.width, a.depth)
else:
    from diffusers import UNet2DModel
    ch = tuple(int(c) for c in a.channels.split(","))
    levels = len(ch)
    unet = UNet2DModel(sample_size=shape[1], in_channels=shape[0], out_channels=shape[0], block_out_channels=ch,
                       layers_per_block=a.lpb, down_block_types=("DownBlock2D",) * levels,
                       up_block_types=("UpBlock2D",) * levels, norm_num_groups=8)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__(); self.unet = unet
        def forward(self, x, t):
            return self.unet(x, t).sample
    net = Wrap()
print("params", sum(q.numel() for q in net.parameters()) / 1e6, "M", flush=True)
ema = copy.deepcopy(net)
ac = alphas_cumprod(timesteps=1000, schedule=a.schedule, beta_start=0.00085, beta_end=0.012)
opt = torch.optim.Adam(net.parameters(), lr=a.lr)
budget = a.minutes * 60
t0 = time.time(); step = 0
g = torch.Generator().manual_seed(1)
while True:
    el = time.time() - t0
    if el >= budget:
        break
    frac = el / budget
    lr = a.lr * (min(1.0, step / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))))
    for pg in opt.param_groups:
        pg["lr"] = lr
    idx = torch.randint(len(mean), (a.batch,), generator=g)
    x0 = mean[idx] if a.use_mean else mean[idx] + std[idx] * torch.randn(a.batch, *shape, generator=g)
    x0 = x0 * scale
    t = torch.randint(1000, (a.batch,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = ac[t].view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    target = eps if a.pred == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
    if a.minsnr > 0:
        snr = (ab / (1 - ab)).view(-1)
        w = torch.clamp(snr, max=a.minsnr) / (snr if a.pred == "epsilon" else snr + 1)
        loss = (w * (net(xt, t) - target).pow(2).flatten(1).mean(1)).mean()
    else:
        loss = F.mse_loss(net(xt, t), target)
    opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        d = min(a.ema, (1 + step) / (10 + step))
        for pe, pn in zip(ema.parameters(), net.parameters()):
            pe.lerp_(pn, 1 - d)
    step += 1
    if step % 500 == 0:
        print(f"step {step} loss {loss.item():.4f} {el:.0f}s", flush=True)
train_s = time.time() - t0
print(f"trained {step} steps in {train_s:.0f}s: {step * a.batch / train_s:.0f} samples/s", flush=True)

ext = load_feature_extractor("lenet-mnist")
real = real_images(data, "test", a.n, 0)
rf = ext.features(real)
ema.eval()
sched = make_scheduler("dpm++", timesteps=1000, schedule=a.schedule, beta_start=0.00085, beta_end=0.012,
                       prediction=a.pred, clip=None)
gen = torch.Generator().manual_seed(0)
t1 = time.time()
with torch.no_grad():
    outs = []
    for i in range(0, a.n, 1000):
        zs = denoise(lambda x, t: ema(x, t.expand(x.shape[0])), (1000, *shape), sched, 20, generator=gen, device="cpu")
        outs.append(((ae.decode(zs / scale).clamp(-1, 1) + 1) / 2))
    imgs = torch.cat(outs)
rate = a.n / (time.time() - t1)
probs = ext.probabilities(imgs)
m = sample_quality_metrics(rf, ext.features(imgs), probs, 0)
hist = torch.bincount(probs.argmax(1), minlength=10).float() / a.n
with torch.no_grad():
    rec = (ae.decode(ae.posterior(real * 2 - 1)[0]).clamp(-1, 1) + 1) / 2
recon_fd = sample_quality_metrics(rf, ext.features(rec), ext.probabilities(rec), 0)["fd"]
res = dict(vars(a), recon_fd=round(recon_fd, 2), steps=step, train_s=round(train_s), samples_per_s=round(step * a.batch / train_s),
           fd=round(m["fd"], 2), precision=m["precision"], recall=m["recall"], coverage=m["coverage"],
           share_min=hist.min().item(), share_max=hist.max().item(), images_per_s=round(rate))
print(json.dumps(res), flush=True)
path = REPO / "bench" / "results" / "latent_denoisers.json"
record = json.loads(path.read_text()) if path.is_file() else {"benchmark": "latent_denoisers", "rows": []}
record["rows"].append({**res, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
path.write_text(json.dumps(record, indent=1) + "\n")
print(f"written to {path}")
