"""Gripper-width estimator probe (results/grounding/README.md; not part of the package): a small CNN
that reads the finger opening off a 64x64 agent-view frame, trained on real frames and their
autoencoder reconstructions (what decoded imagined frames look like).

    python results/grounding/width_estimator.py 3000
"""
import sys
import time
import numpy as np
import torch
import torch.nn as nn
from world_env_training.data.dataset import Dataset
from world_env_training.models.world_model import WorldModel
from world_env_training.models.world_model.processor_world_model import frames_to_tensor, tensor_to_frames
torch.manual_seed(0)
torch.set_num_threads(1)


def load(paths):
    F, W = [], []
    for p in paths:
        ds = Dataset(p)
        for i in range(len(ds)):
            a = ds.load_arrays(i, ("frames", "states"))
            F.append(a["frames"])
            W.append(a["states"][:, 6])
    return np.concatenate(F), np.concatenate(W)


wm = WorldModel.from_pretrained("runs/wm_arm8_long_pkg24")


@torch.no_grad()
def recon(F):
    out = []
    for i in range(0, len(F), 128):
        out.append(tensor_to_frames(wm.decode(wm.encode(frames_to_tensor(F[i:i+128], "cpu")))))
    return np.concatenate(out)


t0 = time.time()
Ftr, Wtr = load(["runs/default/demos", "runs/default/explore", "runs/explore_more"])
Fva, Wva = load(["runs/heldout_explore"])
Fv2, Wv2 = load(["runs/term_demos"])
Fva, Wva = np.concatenate([Fva, Fv2]), np.concatenate([Wva, Wv2])
Rtr, Rva = recon(Ftr), recon(Fva)
print("data", Ftr.shape, Fva.shape, f"{time.time()-t0:.0f}s", flush=True)

net = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
                    nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(), nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(),
                    nn.Flatten(), nn.Linear(64 * 16, 128), nn.GELU(), nn.Linear(128, 1))
opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)


def x(F): return torch.as_tensor(F).permute(0, 3, 1, 2).float() / 127.5 - 1


Xtr = torch.cat([x(Ftr), x(Rtr)])
Ytr = torch.as_tensor(np.concatenate([Wtr, Wtr]) * 100).float()  # cm
yn = Ytr.numpy()
wts = torch.as_tensor(np.where((yn > 3) & (yn < 7.2), 4.0, 1.0))
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
for s in range(steps):
    idx = torch.multinomial(wts, 64, replacement=True)
    xb = Xtr[idx]
    shift = torch.randint(-2, 3, (2,))
    xb = torch.roll(xb, (int(shift[0]), int(shift[1])), (2, 3))
    loss = nn.functional.smooth_l1_loss(net(xb).squeeze(1), Ytr[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if s % 500 == 0:
        print(s, float(loss), flush=True)


def stable(w):
    h = (w > 0.04) & (w < 0.072)
    return h & np.roll(h, 1) & np.roll(h, -1)


net.eval()
with torch.no_grad():
    for name, F in (("real", Fva), ("recon", Rva)):
        p = torch.cat([net(x(F[i:i+256])).squeeze(1) for i in range(0, len(F), 256)]).numpy() / 100
        err = np.abs(p - Wva) * 1000
        hold, est = stable(Wva), (p > 0.03) & (p < 0.075)
        closed = Wva < 0.075
        print(name, f"mae {err.mean():.1f} mm, median {np.median(err):.1f}; "
              f"closed frames {closed.sum()}: held {hold.sum()}; "
              f"est held | held {(est & hold).sum()}/{hold.sum()}, "
              f"est held | empty-closed {(est & closed & ~hold).sum()}/{(closed & ~hold).sum()}")
torch.save(net.state_dict(), "runs/grounding_width_net.pt")  # read by probe.py physics_est
