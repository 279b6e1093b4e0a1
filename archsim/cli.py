"""Command line: a thin layer over :mod:`archsim.api`."""

from __future__ import annotations

import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import click
import numpy as np
import pandas as pd

from archsim.errors import ArchsimError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="archsim")
def cli() -> None:
    """Similarity of neural architectures by adversarial attack transferability (SAT)."""


@cli.command()
@click.option("--models", "models", multiple=True, metavar="SPEC",
              help="Model spec, repeatable or space-separated: zoo:NAME, timm:NAME[,pretrained=false][,checkpoint=PATH], "
                   "torchvision:NAME, file:PATH[,input_size=C:H:W,mean=..,std=..]; any spec takes ,name=DISPLAY. "
                   "Default: the embedded zoo.")
@click.option("--data", default="digits", show_default=True,
              help="digits | imagefolder:PATH | imagenet-val:PATH[,labels=FILE] | npz:PATH (folders take ,size=224).")
@click.option("--n-images", type=int, default=None, help="Seeded, class-stratified subset of this many images.")
@click.option("--attack", default="pgd", show_default=True, help="Attack name.")
@click.option("--eps", type=float, default=None, help="L-inf radius in [0,1] pixel units [default: 0.1 on digits, 4/255 otherwise].")
@click.option("--steps", type=int, default=50, show_default=True, help="Attack iterations.")
@click.option("--rel-step", type=float, default=0.1, show_default=True, help="Step size as a fraction of eps.")
@click.option("--random-start/--no-random-start", default=True, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subset, random start and bootstrap.")
@click.option("--eps-s", type=float, default=1.0, show_default=True, help="Floor of the fooling percentage in SAT (1 keeps SAT >= 0).")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap replicates for 95% intervals.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Cache folder [default: $ARCHSIM_CACHE or ~/.cache/archsim].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/<timestamp>].")
def run(models, data, n_images, attack, eps, steps, rel_step, random_start, seed, eps_s, n_boot, device, batch_size, cache, out) -> None:
    """Compute the SAT matrix of MODELS on DATA and write sat.csv, pairs.csv, models.csv, config.json."""
    from archsim.api import run_sat

    specs = [part for chunk in models for part in chunk.split()]
    out = out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    result = run_sat(
        models=specs or None, data=data, n_images=n_images, attack=attack, eps=eps, steps=steps, rel_step=rel_step,
        random_start=random_start, seed=seed, eps_s=eps_s, n_boot=n_boot, device=device, batch_size=batch_size,
        cache=cache, out=out,
    )
    _print_summary(result, out, time.perf_counter() - started)


@cli.command()
@click.option("--matrix", type=click.Path(path_type=Path), default=None, help="A SAT matrix in the sat.csv layout.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None, help="A finished run folder (uses its sat.csv).")
@click.option("--cards", type=click.Path(path_type=Path), required=True, help="Model cards CSV in the layout of 'Model Feature_release.csv'.")
@click.option("--clusters", "k", type=int, default=None, help="Number of spectral clusters [default: by eigengap].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for clusters.csv, importance.csv, keywords.csv.")
def analyze(matrix, run_dir, cards, k, seed, out) -> None:
    """Spectral clusters, component importance and cluster keywords of a SAT matrix."""
    from archsim.analysis.run import analyze as run_analysis

    if (matrix is None) == (run_dir is None):
        raise ArchsimError("give exactly one of --matrix FILE or --run DIR")
    tables = run_analysis(matrix if matrix is not None else run_dir / "sat.csv", cards, out, k=k, seed=seed)
    clusters = tables["clusters.csv"]
    click.echo(f"{len(clusters)} models in {clusters.cluster.nunique()} clusters; top components:")
    click.echo(tables["importance.csv"].head(5).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {out}/clusters.csv, importance.csv, keywords.csv, spectral_distances.csv")


@cli.command()
def zoo() -> None:
    """List the embedded zoo (trained on digits on first use)."""
    from archsim.models import ZOO

    rows = [
        {"spec": f"zoo:{name}", "family": e.family, "timm architecture": e.architecture, "input": f"{e.input_side}px",
         "regime": e.regime, "seed": e.seed}
        for name, e in ZOO.items()
    ]
    click.echo(pd.DataFrame(rows).to_string(index=False))


def _print_summary(result, out: Path, seconds: float) -> None:
    sat = result.sat
    click.echo("\nSAT matrix (ln % fooled; ln 100 = 4.61 is a perfect, fully transferable attack):")
    with pd.option_context("display.width", 250, "display.max_columns", 100):
        click.echo(sat.to_string(float_format=lambda v: f"{v:.2f}"))
    names = list(sat.index)
    iu = np.triu_indices(len(names), k=1)
    pairs = pd.DataFrame({"a": np.array(names)[iu[0]], "b": np.array(names)[iu[1]], "sat": sat.values[iu]}).dropna()
    pairs = pairs.sort_values("sat", ascending=False)
    click.echo("\nmost similar pairs:")
    for row in pairs.head(3).itertuples():
        click.echo(f"  {row.a:>16} ~ {row.b:<16} SAT {row.sat:.2f} ({np.exp(row.sat):.0f}% fooled)")
    click.echo("least similar pairs:")
    for row in pairs.tail(3).iloc[::-1].itertuples():
        click.echo(f"  {row.a:>16} ~ {row.b:<16} SAT {row.sat:.2f} ({np.exp(row.sat):.0f}% fooled)")
    click.echo("\nper model:")
    table = result.models[["model", "clean_accuracy", "white_box_success", "family", "regime"]]
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    click.echo(
        f"\n{len(names)} models, {result.config['n_images_used']} images, attack {result.config['settings']['attack']}; "
        f"cache: {result.cache_hits} hits, {result.cache_misses} computed; {seconds:.1f} s"
    )
    click.echo(f"wrote {out}/sat.csv, pairs.csv, models.csv, config.json")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; no traceback."""
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        cli.main(args=argv, standalone_mode=False)
    except ArchsimError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()} (see --help)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
