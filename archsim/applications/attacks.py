"""Attacks compared on one run: the SAT matrix of its models and images under each attack, and how they agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from archsim.analysis.agreement import matrix_correlations
from archsim.attacks import Attack, create_attack, hold_attack
from archsim.cache import CacheStore, atomic_write_text
from archsim.engines import Engine, engine_for
from archsim.errors import ArchsimError, ParameterError
from archsim.report.figures import matrix_scatter, write_png
from archsim.report.text import table_text
from archsim.runs import RunFolder, attack_spec, file_label, run_like


@dataclass
class AttackComparison:
    """Result of :func:`compare_attacks`."""

    matrices: dict[str, pd.DataFrame]
    correlations: pd.DataFrame
    white_box: pd.DataFrame
    noise_floor: dict[str, Any] | None = None
    """The run's ``attack_seed_noise`` (``archsim run --attack-seeds K``): how well one attack agrees with itself at
    another seed, the floor below which two attacks' correlation says nothing; None if the run did not measure it."""

    def summary(self) -> str:
        """What ``archsim compare-attacks`` prints: white-box success, the correlations and the noise floor."""
        lines = [
            "white-box success (%):",
            self.white_box.to_string(float_format=lambda v: f"{v:.1f}"),
            "\ncorrelation of off-diagonal SAT entries:",
            table_text(self.correlations, ["a", "b", "pairs", "pearson", "spearman", "spearman_p"]),
        ]
        noise = self.noise_floor
        if noise is not None:
            lines.append(
                f"noise floor: the run's own attack at {noise['seeds']} seeds agrees with itself at Spearman "
                f"{noise['spearman_mean']:.3f} (min {noise['spearman_min']:.3f}); attacks that correlate above it "
                "differ by no more than the attack's noise"
            )
        else:
            lines.append(
                "noise floor unknown: rerun the run with --attack-seeds 3 to measure how well the attack agrees with "
                "itself"
            )
        return "\n".join(lines)


def spec_of(attack: str | Attack, eps: float) -> str:
    """``attack`` as a spec: a spec as it is; an :class:`Attack` instance (made with the run's ``eps``) held, so that
    :func:`archsim.attacks.create_attack` finds it by the spec of its settings."""
    if isinstance(attack, str):
        return attack
    if not isinstance(attack, Attack):
        raise ParameterError("attacks", f"holds a {type(attack).__name__}; give spec strings or Attack instances")
    if attack.eps != eps:
        raise ParameterError(
            "attacks", f"holds {attack.name} at eps {attack.eps}; the run's is {eps}: make it with that"
        )
    hold_attack(attack)
    return attack_spec(attack.config())


def compare_attacks(
    run_dir: str | Path,
    attacks: list[str | Attack],
    *,
    out: str | Path | None = None,
    cache: CacheStore | str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = "auto",
    engine: str | Engine = "local",
    address: str | None = None,
) -> AttackComparison:
    """The SAT matrix of a finished run's models and images under each attack, and how they agree.

    ``attacks`` are specs or :class:`~archsim.attacks.Attack` instances made with the run's eps. The run's own
    attack is the reference and comes first; every attack runs at the
    run's eps, seed and images, and cached sets are reused. Writes ``sat_<attack>.csv``, ``attack_correlations.csv``
    (Pearson and Spearman of the off-diagonal entries, every pair of attacks),
    ``attack_white_box.csv`` and ``attack_comparison.png`` into ``out`` (default
    ``RUN/attacks``). ``engine`` and ``address`` as in :func:`archsim.runs.run_sat`.
    """
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    settings = folder.settings
    eps = settings.eps
    # The run's own attack comes first (its sets are cached); listed attacks equal to it are dropped.
    own = settings.attack
    own_spec = folder.attack_spec
    attacks = [spec_of(attack, eps) for attack in attacks]
    attacks = [own_spec] + [spec for spec in dict.fromkeys(attacks) if create_attack(spec, eps=eps).config() != own]
    if len(attacks) < 2:
        raise ParameterError("attacks", f"give {{}} other than the run's own ({own_spec}) to compare with it")
    if len(settings.models) < 3:  # asked before any attack runs: the correlations need 3 pairs
        raise ArchsimError(
            f"the run has {len(settings.models)} models, which give fewer than 3 model pairs to correlate; compare "
            "attacks on a run of at least 3 models"
        )
    store = folder.cache(cache)
    matrices, white_box = {}, {}
    with engine_for(engine, device, address) as runner:
        for spec in attacks:
            result = run_like(
                folder,
                settings.models,
                attack=spec,
                n_boot=0,
                device=device,
                batch_size=batch_size,
                cache=store,
                engine=runner,
            )
            matrices[spec] = result.sat
            white_box[spec] = result.models.set_index("model")["white_box_success"]
    noise = folder.config.get("attack_seed_noise")
    comparison = AttackComparison(
        matrices, matrix_correlations(matrices), pd.DataFrame(white_box).rename_axis("model"), noise
    )
    out = Path(out) if out is not None else run_dir / "attacks"
    out.mkdir(parents=True, exist_ok=True)
    for spec, matrix in matrices.items():
        atomic_write_text(out / f"sat_{file_label(spec)}.csv", matrix.to_csv(float_format="%.9f"))
    atomic_write_text(out / "attack_correlations.csv", comparison.correlations.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out / "attack_white_box.csv", comparison.white_box.to_csv(float_format="%.2f"))
    write_png(matrix_scatter(matrices, comparison.correlations), out / "attack_comparison.png")
    return comparison
