"""Liang et al.'s synthetic experiment (docs/method.md#knowledge), vectorised over all 5,000 points.

Two one-hidden-layer networks y = W2 sigmoid(W1 x + b1) + b2: the target (width
100) and a source (width 50, 100 or 200) that drifts further from its trained
weights at every step. At each step the first-order attack of each model is the
right singular vector of its input Jacobian at rank ``level``; the metrics of
:mod:`archsim.knowledge.alphas` follow with Delta = J v. Then the source's last
layer is refit by least squares and its RMSE is the knowledge-transfer loss.

The Jacobians of all points come from one einsum and their singular vectors from
one batched eigen-decomposition, in float64 (the random draws stay float32 ``torch.rand`` so the
drift is the protocol's exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from archsim.cache import atomic_write_text
from archsim.errors import ArchsimError, ParameterError
from archsim.knowledge.alphas import alpha_2

DATA_FILE = "rbf-n-50-d-10-m-100-N-5000-num_centers-10.npz"
TARGET_WIDTH = 100
SOURCE_WIDTHS = (100, 50, 200)
LEVELS = (0, 1)
SEED = 233
STEPS = 10
SCALE_STEP = 0.1
COLUMNS = [
    "scale",
    "alpha_S_T",
    "alpha_T_S",
    "gamma_S_T",
    "gamma_T_S",
    "alpha_gamma_combined_S_T",
    "alpha_gamma_combined_T_S",
    "loss_f_S",
    "loss_f_T",
    "gradient_loss",
]


@dataclass
class Network:
    """y = W2 sigmoid(W1 x + b1) + b2 on column inputs x [n, N]."""

    W1: torch.Tensor
    b1: torch.Tensor
    W2: torch.Tensor
    b2: torch.Tensor

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.W1 @ x + self.b1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.W2 @ self.hidden(x) + self.b2

    def jacobians(self, x: torch.Tensor) -> torch.Tensor:
        """Input Jacobian at every column of ``x``: [N, d, n]."""
        h = self.hidden(x)
        return torch.einsum("dm,mN,mn->Ndn", self.W2, h * (1 - h), self.W1)


def weights_file(width: int) -> str:
    return f"weights-rbf-n-50-d-10-m-{width}-N-5000.pt"


def result_name(source_width: int, level: int) -> str:
    """The paper code's file name of one configuration's CSV."""
    cross = f"crossmodel-source_m-{source_width}-" if source_width != TARGET_WIDTH else ""
    return f"result_scale-{cross}rbf-n-50-d-10-m-{TARGET_WIDTH}-N-5000-attack_level-{level}.csv"


def _random_like(width: int, n: int, d: int) -> list[torch.Tensor]:
    """The protocol's draws for one network: W1, b1, W2, b2 as rand - 0.5, in this order."""
    return [torch.rand(shape) - 0.5 for shape in ((width, n), (width, 1), (d, width), (d, 1))]


def _load_network(data_dir: Path, width: int) -> Network:
    path = data_dir / weights_file(width)
    if not path.is_file():
        raise ParameterError(
            "data_dir",
            f"{path} is missing; pass {{}} the folder of the synthetic experiment (e.g. "
            f"../shared/data/liang_synthetic)",
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return Network(*(state[k].to(torch.float64) for k in ("W1", "b1", "W2", "b2")))
    except KeyError as missing:
        raise ArchsimError(f"{path} lacks {missing}; it must hold W1, b1, W2 and b2 saved with torch.save") from None


def attack_directions(jacobians: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right singular vector at rank ``level`` of each Jacobian [N, n], and the largest singular values [N].

    From the eigen-decomposition of the small d x d matrices J J^T rather than an SVD of
    the d x n Jacobians: the same vectors (v = J^T u / sigma) at a fraction of the cost.
    """
    values, vectors = torch.linalg.eigh(jacobians @ jacobians.transpose(1, 2))  # ascending
    sigma = values.flip(-1).clamp(min=0).sqrt()
    u = vectors[:, :, -1 - level]
    return torch.einsum("Ndn,Nd->Nn", jacobians, u) / sigma[:, level, None], sigma[:, 0]


def transfer_metrics(j_s: torch.Tensor, j_t: torch.Tensor, level: int) -> dict[str, float]:
    """Both directions' alpha_1 (mean over points), alpha_2 (gamma), combined score, and the gradient loss."""
    v_s, top_s = attack_directions(j_s, level)
    v_t, top_t = attack_directions(j_t, level)
    apply = lambda j, v: torch.einsum("Ndn,Nn->Nd", j, v).numpy()  # noqa: E731
    d_ss, d_st, d_tt, d_ts = apply(j_s, v_s), apply(j_t, v_s), apply(j_t, v_t), apply(j_s, v_t)
    # alpha_1 relative to the attacked model's strongest response, sigma_max (docs/method.md#knowledge, the synthetic
    # protocol).
    a_st = np.linalg.norm(d_st, axis=1) / top_t.numpy()
    a_ts = np.linalg.norm(d_ts, axis=1) / top_s.numpy()
    p = torch.einsum("Nan,Nbn->ab", j_t, j_s) / len(j_s)
    s = torch.einsum("Nan,Nbn->ab", j_s, j_s) / len(j_s)
    a = p @ torch.linalg.pinv(s)
    residual = j_t - torch.einsum("ab,Nbn->Nan", a, j_s)
    return {
        "alpha_S_T": float(a_st.mean()),
        "alpha_T_S": float(a_ts.mean()),
        "gamma_S_T": alpha_2(d_ss, d_st),
        "gamma_T_S": alpha_2(d_tt, d_ts),
        "alpha_gamma_combined_S_T": alpha_2(d_ss, d_st, a_st),
        "alpha_gamma_combined_T_S": alpha_2(d_tt, d_ts, a_ts),
        "gradient_loss": float(residual.pow(2).sum((1, 2)).mean().sqrt()),
    }


def refit_loss(network: Network, x: torch.Tensor, y: torch.Tensor) -> float:
    """RMSE after refitting the last layer by least squares: sqrt(mean over points of |y - y_hat|^2)."""
    h = network.hidden(x)
    h_mean, y_mean = h.mean(1, keepdim=True), y.mean(1, keepdim=True)
    cov_yh = (y - y_mean) @ (h - h_mean).T / x.shape[1]
    cov_h = (h - h_mean) @ (h - h_mean).T / x.shape[1]
    w2 = cov_yh @ torch.linalg.pinv(cov_h)
    return rmse(Network(network.W1, network.b1, w2, y_mean - w2 @ h_mean), x, y)


def rmse(network: Network, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((y - network(x)).pow(2).sum(0).mean().sqrt())


def run_configuration(data_dir: Path, source_width: int, level: int) -> pd.DataFrame:
    """One configuration: ten drift steps of the source, every metric before the refit, then the refit loss."""
    data = np.load(data_dir / DATA_FILE)
    x, y = torch.as_tensor(data["X"], dtype=torch.float64), torch.as_tensor(data["Y"], dtype=torch.float64)
    n, d = x.shape[0], y.shape[0]
    torch.manual_seed(SEED)
    _random_like(TARGET_WIDTH, n, d)  # the target network's initial draws, overwritten by its weights
    _random_like(source_width, n, d)  # the source's, likewise
    deviations = [t.to(torch.float64) for t in _random_like(source_width, n, d)]
    target = _load_network(data_dir, TARGET_WIDTH)
    source = _load_network(data_dir, source_width)
    weights = [source.W1.clone(), source.b1.clone(), source.W2.clone(), source.b2.clone()]
    j_t = target.jacobians(x)
    loss_t = rmse(target, x, y)
    rows = []
    for step in range(STEPS):
        scale = step * SCALE_STEP
        for w, dev in zip(weights, deviations, strict=True):
            w += scale * dev  # cumulative: the source drifts further at every step
        drifted = Network(*weights)
        rows.append(
            {
                "scale": scale,
                **transfer_metrics(drifted.jacobians(x), j_t, level),
                "loss_f_S": refit_loss(drifted, x, y),
                "loss_f_T": loss_t,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def liang_synthetic(data_dir: str | Path, out: str | Path) -> dict[str, pd.DataFrame]:
    """All six configurations (source width 100, 50, 200; attack level 0, 1), one CSV each, and a figure."""
    data_dir, out = Path(data_dir), Path(out)
    if not (data_dir / DATA_FILE).is_file():
        raise ParameterError(
            "data_dir",
            f"{data_dir / DATA_FILE} is missing; pass {{}} the folder of the synthetic experiment (e.g. "
            f"../shared/data/liang_synthetic)",
        )
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file; choose a folder")
    results = {}
    configurations = [(width, level) for width in SOURCE_WIDTHS for level in LEVELS]
    for width, level in tqdm(configurations, desc="configurations", unit="config", disable=None):
        results[result_name(width, level)] = run_configuration(data_dir, width, level)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in results.items():
        atomic_write_text(out / name, table.to_csv(index=False, float_format="%.9g"))
    from archsim.report.figures import liang_synthetic_figure, write_png

    write_png(liang_synthetic_figure(results), out / "liang_synthetic.png")
    return results
