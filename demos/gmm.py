"""Fit a Gaussian mixture to data with missing entries and look at an exact conditional."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from probcirc import GaussianMixture

torch.manual_seed(0)
truth = GaussianMixture(
    weights=torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
    means=torch.tensor([[-3.0, 0.0], [2.0, 2.0], [2.0, -3.0]], dtype=torch.float64),
    covariances=torch.tensor(
        [[[1.0, 0.8], [0.8, 1.0]], [[1.0, -0.5], [-0.5, 1.5]], [[0.4, 0.0], [0.0, 0.4]]], dtype=torch.float64
    ),
)
train, test = truth.sample(3000), truth.sample(1000)
missing = torch.rand(train.shape) < 0.2
missing[missing.all(1), 0] = False
fit = GaussianMixture.fit(train.masked_fill(missing, float("nan")), n_components=3)
print(f"fitted on 3000 points with {int(missing.sum())} missing entries (20%)")
print(
    f"test log-likelihood per point: fitted {fit.log_prob(test).mean():.4f}, "
    f"true model {truth.log_prob(test).mean():.4f}"
)

x0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
post = fit.condition(x0, torch.tensor([[False, True]]))
print(f"p(x1 | x0 = 2): weights {post.weights[0].numpy().round(3)}, mean {post.mean[0, 1]:.3f}")

grid = torch.stack(torch.meshgrid(torch.linspace(-6, 6, 200), torch.linspace(-6, 6, 200), indexing="xy"), -1).double()
density = fit.log_prob(grid.reshape(-1, 2)).exp().reshape(200, 200)
fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
a.contour(grid[..., 0], grid[..., 1], density, levels=12)
a.scatter(*train[~missing.any(1)][:400].T, s=2, c="k", alpha=0.4)
a.axvline(2.0, color="r", lw=0.8)
a.set_title("fitted mixture (20% entries missing)")
t = torch.linspace(-6, 6, 400, dtype=torch.float64)[:, None]
b.plot(t[:, 0], post[0].log_prob(t).exp(), "r")
b.set_title("exact conditional p(x1 | x0 = 2)")
Path("out").mkdir(exist_ok=True)
fig.tight_layout()
fig.savefig("out/gmm.png", dpi=100)
print("wrote out/gmm.png")
