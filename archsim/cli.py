"""Command line: a thin layer over :mod:`archsim.api`."""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import click
import pandas as pd

from archsim import plugins
from archsim.engines import engine_for
from archsim.errors import ArchsimError, ParameterError
from archsim.params import RULES, Rule
from archsim.plugins import plugin_names
from archsim.specs import model_list, quick_check_run


class PluginOption(click.Option):
    """An option whose choices plugins extend: its help ends with the names the installed distributions declare in
    ``plugin_group`` (read from their metadata when the help is shown, nothing imported)."""

    def __init__(self, *args, plugin_group: str, plugin_kind: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_group, self.plugin_kind = plugin_group, plugin_kind

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        names = plugin_names(self.plugin_group)
        own = self.help
        self.help = f"{own} Plugins add the {self.plugin_kind}: {', '.join(names)}." if names else own
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = own


class OnceCommand(click.Command):
    """A command whose single-valued options may be given once: click keeps the last of ``--seed 1 --seed 2`` without
    a word, and a user who repeats an option by mistake gets a result of settings they did not mean."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        single = {
            opt: param
            for param in self.params
            if isinstance(param, click.Option) and not param.multiple
            for opt in (*param.opts, *param.secondary_opts)
        }
        seen: dict[str, str] = {}
        for arg in args:
            if arg == "--":
                break
            opt = arg.split("=", 1)[0]
            if opt in single:
                name = single[opt].name
                if name in seen:
                    raise click.UsageError(f"{opt} is given twice (as {seen[name]} before); give each option once", ctx)
                seen[name] = opt
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        ctx.meta[BEGAN] = time.time()  # files changed after it are the command's (see wrote())
        try:
            return super().invoke(ctx)
        except ParameterError as error:  # the library names a Python parameter; here the user typed a flag
            raise ArchsimError(error.naming(flag_of(ctx.command, error.parameter))) from error


def flag_of(command: click.Command, parameter: str) -> str:
    """The flag of ``command`` whose value is the Python ``parameter`` (``--run`` for ``run_dir``); where the command
    has none (an option inside a spec, such as an attack's ``samples=``), the parameter's own name."""
    for param in command.params:
        if param.name == parameter and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return parameter


_show_traceback = [False]


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    _show_traceback[0] = value


class ArchsimGroup(click.Group):
    command_class = OnceCommand
    group_class = type  # subgroups (cache) are made of this class too, so their commands check as well


@click.group(cls=ArchsimGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="archsim")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="Show the traceback of an error too (for a bug report), not only its one line.",
)
def cli() -> None:
    """Similarity of neural architectures by adversarial attack transferability (SAT)."""


class NonEmptyPath(click.Path):
    """A path that is not the empty string (which pathlib would read as the current folder)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a folder or file name", param, ctx)
        return super().convert(value, param, ctx)


PATH = NonEmptyPath(path_type=Path)


class CountOrAuto(click.ParamType):
    """A whole number or ``auto``, by the option's rule (--batch-size, --max-resident)."""

    name = "N|auto"

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def convert(self, value, param, ctx):
        try:
            return self.rule.convert(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not {self.rule.describe()}", param, ctx)


def option_type(parameter: str) -> click.ParamType:
    """The click type of the option whose Python parameter is ``parameter``, built from its rule in
    :data:`archsim.params.RULES`: the values the library accepts, refused while the command line is parsed."""
    rule = RULES[parameter]
    if rule.choices:
        return click.Choice(list(rule.choices))
    if rule.auto:
        return CountOrAuto(rule)
    if rule.kind is int:
        return click.IntRange(min=rule.low, max=rule.high)
    return click.FloatRange(min=rule.above, min_open=rule.above is not None)


SEED = option_type("seed")


BATCH_SIZE_HELP = (
    "Images per batch, or auto: measured per model and device (fastest batch within the free memory), "
    "searched once per machine and cached."
)


def engine_options(command):
    """--engine, --address and --cpus-per-task of the commands that attack or evaluate."""
    command = click.option(
        "--cpus-per-task",
        type=float,
        default=1,
        show_default=True,
        help="With --engine ray: CPUs each task asks for (its torch threads on CPU-only clusters).",
    )(command)
    command = click.option(
        "--address",
        default=None,
        metavar="ADDR",
        help="With --engine ray: auto, HOST:PORT of the head node or ray://HOST:PORT [default: start Ray on this "
        "machine].",
    )(command)
    return click.option(
        "--engine",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Where the per-model attack and evaluation tasks run: here, or on a Ray cluster (needs archsim[ray]; "
        "--cache must be on a file system every node mounts).",
    )(command)


@cli.command()
@click.option(
    "--models",
    "models",
    multiple=True,
    metavar="SPEC",
    help="Model spec, repeatable or space-separated: zoo:NAME, "
    "timm:NAME[,pretrained=false][,checkpoint=PATH][,init_seed=S], "
    "torchvision:NAME (same options), file:PATH[,input_size=C:H:W,mean=..,std=..]; any spec takes ,name=DISPLAY, "
    "and all but zoo: ,regime=LABEL,hparams=LABEL,seed=N (how your weights were trained, for the "
    "training-vs-architecture table). "
    "@FILE: the specs in FILE, one per line (# comments). Default: the embedded zoo.",
    cls=PluginOption,
    plugin_group=plugins.SOURCES,
    plugin_kind="schemes",
)
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="digits | imagefolder:PATH[,classes=imagenet] | imagenet-val:PATH[,labels=FILE] | npz:PATH (folders take "
    ",size=224).",
)
@click.option(
    "--n-images",
    type=option_type("n_images"),
    default=None,
    help="Seeded, class-stratified subset of this many images.",
)
@click.option(
    "--views",
    type=option_type("views"),
    default="own",
    show_default=True,
    help="own (the SAT paper's protocol): each model sees every image through its own evaluation transform (timm's "
    "resize, crop and interpolation), is attacked at its own resolution, and a target resizes a source's adversarial "
    "images to its input size. shared: one stored pixel space (the data's size and crop_pct) every model resizes.",
)
@click.option(
    "--attack",
    default="pgd",
    show_default=True,
    metavar="NAME[,key=value...]",
    help="pgd | fgsm | mifgsm | vmifgsm | apgd-ce | lowfreq-pgd, with options, e.g. "
    "'vmifgsm,samples=20,beta=1.5', 'lowfreq-pgd,ratio=0.25', 'apgd-ce,rho=0.75'; or any torchattacks "
    "attack as torchattacks:NAME[,option=value...], e.g. 'torchattacks:TIFGSM,decay=1.0'.",
    cls=PluginOption,
    plugin_group=plugins.ATTACKS,
    plugin_kind="attacks",
)
@click.option(
    "--eps",
    type=float,
    default=None,
    help="L-inf radius in [0,1] pixel units [default: 0.1 on digits, 4/255 otherwise].",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Attack iterations [default: the attack's; pgd 50, apgd-ce 100, (v)mifgsm 10].",
)
@click.option(
    "--rel-step", type=float, default=None, help="Step size as a fraction of eps [default: pgd 0.1, (v)mifgsm 1/steps]."
)
@click.option(
    "--random-start/--no-random-start",
    default=None,
    help="Random start in the ball [default: on for pgd, apgd-ce, lowfreq-pgd].",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the subset, random start and bootstrap.")
@click.option(
    "--eps-s",
    type=option_type("eps_s"),
    default=1.0,
    show_default=True,
    help="Floor of the fooling percentage in SAT (1 keeps SAT >= 0).",
)
@click.option(
    "--n-boot",
    type=option_type("n_boot"),
    default=1000,
    show_default=True,
    help="Bootstrap replicates for 95% intervals (0: none, the interval columns stay empty).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--batch-size", type=option_type("batch_size"), default="auto", show_default=True, help=BATCH_SIZE_HELP)
@click.option(
    "--precision",
    type=option_type("precision"),
    default="auto",
    show_default=True,
    help="auto: bf16 on CUDA, fp32 on the CPU. bf16 (autocast) attacks 1.3-3.6x faster on recent GPUs; its SAT keeps "
    "a rank "
    "correlation of 0.982-0.991 with fp32, as close as fp32 at another attack seed (0.974-0.984). fp32 reproduces "
    "exactly.",
)
@click.option(
    "--attack-seeds",
    type=option_type("attack_seeds"),
    default=1,
    show_default=True,
    help="Attack with this many seeds (random starts) to measure the attack's own noise: pairs.csv gains the "
    "per-pair mean and spread, config.json the rank correlation between seeds. Costs K times the run.",
)
@click.option(
    "--keep-going",
    is_flag=True,
    default=False,
    help="Leave out models that fail the check every model gets first (one forward and backward pass), instead of "
    "stopping.",
)
@click.option(
    "--max-resident",
    type=option_type("max_resident"),
    default="auto",
    show_default=True,
    help="Targets kept loaded at once while evaluating; each adversarial set is read once per group of them. "
    "auto: as many as fit a quarter of the free memory.",
)
@click.option(
    "--compile/--no-compile",
    default=False,
    show_default=True,
    help="Run the models through torch.compile (pays off on a GPU over many batches).",
)
@click.option("--cache", type=PATH, default=None, help="Cache folder [default: $ARCHSIM_CACHE or ~/.cache/archsim].")
@click.option("--out", type=PATH, default=None, help="Run folder [default: runs/<timestamp>].")
@engine_options
def run(  # noqa: PLR0913 - one parameter per flag, as click passes them
    models,
    data,
    n_images,
    views,
    attack,
    eps,
    steps,
    rel_step,
    random_start,
    seed,
    eps_s,
    n_boot,
    device,
    batch_size,
    precision,
    attack_seeds,
    keep_going,
    max_resident,
    compile,
    cache,
    out,
    engine,
    address,
    cpus_per_task,
) -> None:
    """Compute the SAT matrix of MODELS on DATA; write sat.csv, pairs.csv, models.csv, cards.csv, config.json,
    the analysis tables and report.html."""
    specs = model_list(models)
    if models and not specs:
        raise ArchsimError("--models is empty; list model specs, or leave --models out for the embedded zoo")
    quick_check_run(specs, data, eps)  # before torch is imported: a typo is answered in a fraction of a second
    from archsim.runs import run_sat

    made, out = out is None, out or _new_run_dir()
    started = time.perf_counter()
    try:
        with engine_for(engine, device, address, cpus_per_task) as runner:
            result = run_sat(
                models=specs or None,
                data=data,
                n_images=n_images,
                attack=attack,
                eps=eps,
                steps=steps,
                rel_step=rel_step,
                random_start=random_start,
                seed=seed,
                eps_s=eps_s,
                n_boot=n_boot,
                device=device,
                batch_size=batch_size,
                cache=cache,
                out=out,
                engine=runner,
                precision=precision,
                compile=compile,
                keep_going=keep_going,
                max_resident=max_resident,
                attack_seeds=attack_seeds,
                views=views,
            )
    except BaseException:
        if made and not any(out.iterdir()):  # refused before it claimed the folder: leave no empty runs/<timestamp>
            out.rmdir()
        raise
    from archsim.report.summary import run_summary_text

    click.echo(run_summary_text(result, out=out, seconds=time.perf_counter() - started))
    from archsim.report.analyze import analyze_run

    try:
        analysis = analyze_run(out, seed=seed)
    except ArchsimError as error:  # e.g. NaN entries: the run itself is complete and kept
        click.echo(f"no analysis or report for this run: {error}", err=True)
        return
    click.echo(f"wrote {out}/report.html ({analysis.spectral.k} clusters; open it in a browser)")


@cli.command()
@click.option("--matrix", type=PATH, default=None, help="A SAT matrix in the sat.csv layout.")
@click.option(
    "--run", "run_dir", type=PATH, default=None, help="A finished run folder (its sat.csv, models.csv, cards.csv)."
)
@click.option(
    "--cards",
    type=PATH,
    default=None,
    help="Model cards CSV in the layout of 'Model Feature_release.csv' [required with --matrix; default with --run: "
    "its cards.csv].",
)
@click.option("--clusters", "k", type=int, default=None, help="Number of spectral clusters [default: by eigengap].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--out", type=PATH, default=None, help="Output folder [required with --matrix; default with --run: the run folder]."
)
def analyze(matrix, run_dir, cards, k, seed, out) -> None:
    """Clusters (and their stability), component importance, keywords and report.html of a SAT matrix."""
    from archsim.report.analyze import analyze as analyze_files
    from archsim.report.analyze import analyze_run

    if (matrix is None) == (run_dir is None):
        raise ArchsimError("give exactly one of --matrix FILE or --run DIR")
    if matrix is not None:
        if cards is None or out is None:
            raise ArchsimError("--matrix needs --cards CSV and --out DIR")
        result = analyze_files(matrix, cards, out, k=k, seed=seed)
    else:
        out = out or run_dir
        result = analyze_run(run_dir, cards=cards, out=out, k=k, seed=seed)
    _print_analysis(result, out)
    if k is None:
        click.echo(
            f"k = {result.clusters.cluster.nunique()} by the largest eigengap; give --clusters K for another "
            "(the SAT paper clusters its 69 models into 10: --clusters 10)"
        )


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option("--cards", type=PATH, default=None, help="Cards CSV [default: the run's cards.csv].")
@click.option("--clusters", "k", type=int, default=None, help="Number of spectral clusters [default: by eigengap].")
@click.option("--seed", type=SEED, default=0, show_default=True)
def report(run_dir, cards, k, seed) -> None:
    """(Re)write RUN/report.html and the analysis tables of a finished run."""
    from archsim.report.analyze import analyze_run

    _print_analysis(analyze_run(run_dir, cards=cards, out=run_dir, k=k, seed=seed), run_dir)


@cli.command()
@click.argument("specs", nargs=-1, required=True, metavar="MODEL_SPEC|@FILE...")
@click.option("--out", type=PATH, required=True, help="CSV to write (layout of 'Model Feature_release.csv').")
@click.option("--cache", type=PATH, default=None, help="Cache folder (zoo weights).")
def cards(specs, out, cache) -> None:
    """Extract model cards (docs/method.md#analysis) from the models' forward passes."""
    from archsim.analysis.extract import model_cards

    table = model_cards(list(specs), cache=cache, out=out)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        click.echo(table.to_string())
    click.echo(f"wrote {out}")


def rerun_options(command):
    """--device, --batch-size and --cache of the commands that recompute on a finished run."""
    command = click.option("--cache", type=PATH, default=None, help="Cache folder [default: the run's].")(command)
    command = click.option(
        "--batch-size", type=option_type("batch_size"), default="auto", show_default=True, help=BATCH_SIZE_HELP
    )(command)
    return click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")(command)


@cli.command("compare-attacks")
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option(
    "--attacks",
    multiple=True,
    required=True,
    metavar="NAME[,key=value...]",
    help='Two or more attacks, repeatable or space-separated, e.g. "pgd apgd-ce mifgsm vmifgsm lowfreq-pgd".',
    cls=PluginOption,
    plugin_group=plugins.ATTACKS,
    plugin_kind="attacks",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/attacks].")
@rerun_options
@engine_options
def compare_attacks(run_dir, attacks, out, device, batch_size, cache, engine, address, cpus_per_task) -> None:
    """SAT of a run's models under several attacks, and how the matrices correlate (docs/method.md#sat)."""
    from archsim.applications.attacks import compare_attacks as compare

    specs = [part for chunk in attacks for part in chunk.split()]
    with engine_for(engine, device, address, cpus_per_task) as runner:
        result = compare(run_dir, specs, out=out, cache=cache, device=device, batch_size=batch_size, engine=runner)
    click.echo(result.summary())
    finish_on_run(run_dir, out, out or run_dir / "attacks")


class RadiusList(click.ParamType):
    """Radii as numbers or N/255, space- or comma-separated."""

    name = "radii"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        radii = []
        for part in value.replace(",", " ").split():
            top, _, bottom = part.partition("/")
            try:
                radii.append(float(top) / (float(bottom) if bottom else 1.0))
            except (ValueError, ZeroDivisionError):
                self.fail(f"{part!r} is not a radius; write numbers such as 0.0157 or 4/255", param, ctx)
        return radii


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder (its models, images, attack).")
@click.option(
    "--published",
    type=PATH,
    required=True,
    help="A published SAT matrix in the sat.csv layout, e.g. ../shared/data/sat_release/SAT_release.csv; models are "
    "matched by name.",
)
@click.option(
    "--radii",
    type=RadiusList(),
    default="1/255 2/255 4/255 8/255 16/255",
    show_default=True,
    help="The grid of radii, as numbers or N/255.",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/calibration].")
@rerun_options
@engine_options
def calibrate(run_dir, published, radii, out, device, batch_size, cache, engine, address, cpus_per_task) -> None:
    """The attack radius at which a run agrees best with a published SAT matrix: the run's models and images at each
    radius, compared with the published entries (mean absolute SAT difference, Spearman over pairs, the white-box
    diagonal)."""
    from archsim.applications.calibrate import calibrate_radius

    with engine_for(engine, device, address, cpus_per_task) as runner:
        result = calibrate_radius(
            run_dir, published, radii, out=out, cache=cache, device=device, batch_size=batch_size, engine=runner
        )
    click.echo(result.summary())
    finish_on_run(run_dir, out, out or run_dir / "calibration")


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option(
    "--measures",
    multiple=True,
    required=True,
    metavar="NAME",
    help="Repeatable or space-separated: disagreement, error-consistency, cka, regions, boundary.",
    cls=PluginOption,
    plugin_group=plugins.MEASURES,
    plugin_kind="measures",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/measures].")
@rerun_options
@click.option(
    "--pair",
    nargs=2,
    default=None,
    metavar="A B",
    help="Model pair for the spread column [default: the pair of median SAT].",
)
@click.option(
    "--max-resident",
    type=option_type("max_resident"),
    default="auto",
    show_default=True,
    help="Models kept loaded at once; the boundary measure streams the images once per group of them. "
    "auto: as many as fit a quarter of the free memory.",
)
def measures(run_dir, measures, out, device, batch_size, cache, pair, max_resident) -> None:
    """Similarity measures beside SAT (docs/guide/measures.md) for a run's models, one CSV each in the sat.csv layout,
    and their comparison with SAT (spread at matched compute, cost, correlation with SAT and ensemble gains)."""
    from archsim.applications.measures import compute_measures

    names = [part for chunk in measures for part in chunk.split()]
    result = compute_measures(
        run_dir,
        names,
        out=out,
        cache=cache,
        device=device,
        batch_size=batch_size,
        pair=pair,
        max_resident=max_resident,
    )
    if "correlations" in result:
        click.echo("correlation with SAT (off-diagonal entries):")
        click.echo(
            result["correlations"][["b", "pairs", "pearson", "spearman", "spearman_p"]]
            .rename(columns={"b": "measure"})
            .to_string(index=False, float_format=lambda v: f"{v:.3g}")
        )
    if "comparison" in result:
        click.echo("\ncomparison (docs/guide/measures.md):")
        from archsim.measures.comparison import COMPARISON_COLUMNS

        with pd.option_context("display.width", 200):
            click.echo(
                result["comparison"][list(COMPARISON_COLUMNS)].to_string(index=False, float_format=lambda v: f"{v:.3g}")
            )
    finish_on_run(run_dir, out, out or run_dir / "measures")


def _show(table: pd.DataFrame, columns: list[str] | None = None) -> None:
    from archsim.report.text import table_text  # here: the report package imports matplotlib, seconds the CLI's
    # parsing (and every usage error) would otherwise wait for

    click.echo(table_text(table, columns))


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option("--k", "k", type=int, default=3, show_default=True, help="Size of the recommended ensemble.")
@click.option(
    "--clusters",
    type=click.IntRange(min=2),
    default=None,
    help="Spectral clusters for the K-from-L table and the L = K choice [default: the run's analysis' k, else the "
    "eigengap's].",
)
@click.option(
    "--random-sets",
    type=option_type("random_sets"),
    default=1000,
    show_default=True,
    help="Random k-sets the choices are compared with, at every K.",
)
@click.option(
    "--images",
    type=option_type("images"),
    default="eval",
    show_default=True,
    help="eval: score ensembles on every image of the run's evaluation split (as the paper, on the whole validation "
    "set; the members' logits on the other images are computed once and cached) and measure the recommendation on "
    "the held-out ones; sat: on the run's SAT images alone.",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/ensembles].")
@rerun_options
def ensemble(run_dir, k, clusters, random_sets, images, out, device, batch_size, cache) -> None:
    """Logit-averaging ensembles against SAT (docs/method.md#decisions): all pairs, K models from L clusters beside
    random K-sets, the paper's most diverse choice (one model from each of K clusters) and the lowest-mean-SAT set
    against random k-sets, and a recommended k-set with its measured error."""
    from archsim.applications.ensembles import ensembles_on_run

    study = ensembles_on_run(
        run_dir,
        k=k,
        clusters=clusters,
        random_sets=random_sets,
        images=images,
        out=out,
        cache=cache,
        device=device,
        batch_size=batch_size,
    )
    click.echo(study.summary())
    finish_on_run(run_dir, out, out or run_dir / "ensembles")


@cli.command()
@click.option("--run", "run_dir", type=PATH, default=None, help="A finished run folder (also scores ensembles).")
@click.option("--matrix", type=PATH, default=None, help="Any similarity matrix in the sat.csv layout.")
@click.option("--k", "k", type=int, required=True, help="How many models to pick.")
@click.option(
    "--method",
    type=click.Choice(["inverse", "proportional", "uniform"]),
    default="inverse",
    show_default=True,
    help="inverse: k-means++ style, diverse (the paper's P_1/sim); proportional (P_sim) and uniform: the baselines.",
)
@click.option(
    "--exponent",
    type=float,
    default=1.0,
    show_default=True,
    help="Exponent of the sampling weights (1 / SAT)^E: 1 is the paper's P_1/sim, near uniform on SAT's "
    "narrow range; higher is more diverse.",
)
@click.option(
    "--draws",
    type=option_type("draws"),
    default=1000,
    show_default=True,
    help="Draws per method for the comparison table.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--out", type=PATH, default=None, help="Folder for selection.csv [default: RUN/selection; none with --matrix]."
)
@rerun_options
def select(run_dir, matrix, k, method, exponent, draws, seed, out, device, batch_size, cache) -> None:
    """Draw a diverse set of k models (docs/method.md#decisions) and compare the three samplers."""
    from archsim.applications.selection import select_models

    result = select_models(
        k,
        run_dir=run_dir,
        matrix=matrix,
        method=method,
        exponent=exponent,
        draws=draws,
        seed=seed,
        out=out,
        device=device,
        batch_size=batch_size,
        cache=cache,
    )
    click.echo(result.summary())
    if result.out is not None:
        click.echo(wrote(result.out))
        if run_dir is not None and result.out == run_dir / "selection":
            _refresh_report(run_dir)


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.argument("spec", metavar="MODEL_SPEC")
@click.option("--out", type=PATH, default=None, help="Folder of the N+1-model run [default: RUN/added/<name>].")
@click.option(
    "--one-sided",
    is_flag=True,
    default=False,
    help="The paper's approximation, without the run's adversarial sets: attack only the newcomer, evaluate the run's "
    "models on its set, assign the cluster from one-sided SAT.",
)
@rerun_options
@engine_options
def add(run_dir, spec, out, one_sided, device, batch_size, cache, engine, address, cpus_per_task) -> None:
    """Add a model to a finished run (docs/method.md#decisions): attack only it, reuse every cached set,
    write its SAT row (symmetric and one-sided) and the existing cluster it joins."""
    from archsim.applications.newcomer import add_model
    from archsim.report.analyze import analyze_run

    started = time.perf_counter()
    with engine_for(engine, device, address, cpus_per_task) as runner:
        result = add_model(
            run_dir,
            spec,
            out=out,
            cache=cache,
            device=device,
            batch_size=batch_size,
            engine=runner,
            one_sided=one_sided,
        )
    click.echo(result.summary(run_dir))
    click.echo(
        f"cache: {result.cache_hits} hits, {result.cache_misses} computed; {time.perf_counter() - started:.1f} s"
    )
    if not one_sided:
        analyze_run(result.out)  # the run with the newcomer, as `archsim run` leaves one
    click.echo(wrote(result.out))


@cli.command()
@click.option(
    "--run",
    "run_dir",
    type=PATH,
    required=True,
    help="A finished run on digits (students train on its training split).",
)
@click.option("--student", required=True, help="A zoo: model of the run (name or spec); retrained once per teacher.")
@click.option(
    "--teachers",
    multiple=True,
    metavar="MODEL",
    help="Models of the run, repeatable or space-separated [default: all but the student].",
)
@click.option(
    "--epochs",
    type=option_type("epochs"),
    default=None,
    help="Training epochs per student [default: the student's recipe].",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/distill/<student>].")
@click.option("--cache", type=PATH, default=None, help="Cache folder [default: the run's].")
def distill(run_dir, student, teachers, epochs, out, cache) -> None:
    """Hard-label distillation from every teacher (docs/method.md#decisions): student accuracy against
    teacher-student SAT, overall and by shared base architecture, with teacher accuracy as control."""
    from archsim.applications.distill import distill as run_distill

    names = [part for chunk in teachers for part in chunk.split()]
    result = run_distill(run_dir, student, teachers=names or None, epochs=epochs, out=out, cache=cache)
    click.echo(result.summary())
    finish_on_run(run_dir, out, result.out)


@cli.command("compare-matrices")
@click.argument("matrices", nargs=-1, required=True, type=PATH, metavar="MATRIX MATRIX...")
@click.option(
    "--out",
    type=PATH,
    default=None,
    help="Folder for matrix_correlations.csv and matrix_comparison.png [default: print only].",
)
def compare_matrices_command(matrices, out) -> None:
    """How far SAT matrices agree (e.g. your run against the SAT paper's SAT_release.csv): Pearson and
    Spearman correlation of the off-diagonal entries and their mean difference, on the models all of them
    name. MATRIX: a CSV in the sat.csv layout, or a run folder (its sat.csv)."""
    from archsim.report.analyze import compare_matrix_files

    table, aligned, left_out = compare_matrix_files(list(matrices), out)
    click.echo(f"{len(next(iter(aligned.values())))} models in common, {len(table)} comparison(s)")
    for label, missing in left_out.items():
        if missing:
            click.echo(
                f"left out of {label}: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''} ({len(missing)})"
            )
    _show(table)
    if out is not None:
        click.echo(wrote(out))


@cli.command("recommend-teacher")
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option("--student", required=True, help="A model of the run (name or spec).")
def recommend_teacher(run_dir, student) -> None:
    """Rank the run's models as distillation teachers for a student: by the SAT paper's conclusion (another base
    architecture, least similar, first), or by the student accuracies archsim distill measured on the run."""
    from archsim.applications.distill import recommend_teachers

    table = recommend_teachers(run_dir, student)
    _show(table.drop(columns="rule"))
    click.echo(f"\nranked by the {table['rule'].iloc[0]}")
    click.echo(f"recommended teacher: {table['teacher'].iloc[0]}")


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option(
    "--checkpoints",
    "checkpoints_of",
    default=None,
    metavar="zoo:NAME",
    help="Also SAT of this zoo model's training checkpoints against its final weights.",
)
@click.option(
    "--epochs", default=None, metavar="E,E,...", help="Checkpoint epochs [default: five spread over training]."
)
@click.option(
    "--adversarial",
    multiple=True,
    metavar="SPEC",
    help="Also adversarially trained models, repeatable or space-separated (the paper's check: several of one "
    "architecture with different seeds, e.g. 'zoo:resnet-adv zoo:resnet-adv-s1 zoo:resnet-adv-s2'): their mean SAT "
    "among themselves and with the run's models, against the run's SAT between seeds, regimes and architectures. The "
    "run stays as it is.",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/checks].")
@rerun_options
@engine_options
def checks(
    run_dir, checkpoints_of, epochs, adversarial, out, device, batch_size, cache, engine, address, cpus_per_task
) -> None:
    """The SAT paper's further checks (docs/method.md#analysis): SAT against identical misclassifications under
    attack, SAT of training checkpoints against the final model, and whether adversarial training
    acts like a change of training regime."""
    from archsim.applications.checks import checks_on_run, checks_summary

    try:
        chosen = [int(e) for e in epochs.split(",")] if epochs else None
    except ValueError:
        raise ArchsimError(f"--epochs {epochs!r} must be whole numbers separated by commas, e.g. 1,5,10") from None
    with engine_for(engine, device, address, cpus_per_task) as runner:
        tables = checks_on_run(
            run_dir,
            checkpoints_of=checkpoints_of,
            epochs=chosen,
            adversarial=[spec for text in adversarial for spec in text.split()] or None,
            out=out,
            cache=cache,
            device=device,
            batch_size=batch_size,
            engine=runner,
        )
    click.echo(checks_summary(tables))
    finish_on_run(run_dir, out, out or run_dir / "checks")


@cli.command()
@click.option("--run", "run_dir", type=PATH, required=True, help="A finished run folder.")
@click.option(
    "--n-boot",
    type=option_type("n_boot"),
    default=200,
    show_default=True,
    help="Bootstrap replicates for 95% intervals (0: none).",
)
@click.option("--out", type=PATH, default=None, help="Output folder [default: RUN/alphas].")
@rerun_options
def alphas(run_dir, n_boot, out, device, batch_size, cache) -> None:
    """Liang et al.'s alpha_1, alpha_2 and combined score between every pair of a run's models
    (docs/method.md#knowledge), from the run's cached attacks; N x N CSVs in the sat.csv layout (row = source)."""
    from archsim.knowledge.on_run import alpha_matrices

    result = alpha_matrices(run_dir, out=out, n_boot=n_boot, cache=cache, device=device, batch_size=batch_size)
    for name in ("alpha_1", "alpha_2", "alpha_combined"):
        click.echo(f"{name} (row: source, column: target):")
        with pd.option_context("display.width", 250, "display.max_columns", 100):
            click.echo(result[name].to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo(wrote(out or run_dir / "alphas"))


@cli.command("knowledge-transfer")
@click.option(
    "--architectures",
    default=",".join(("resnet-s0", "mixer", "convnext")),
    show_default=True,
    metavar="NAME,...",
    help="Zoo architectures of the sources (the target is a resnet-s0 trained on the target task).",
)
@click.option(
    "--overlaps",
    default="0,25,50,75,100",
    show_default=True,
    metavar="P,...",
    help="Shares (%) of the target task's 4 classes in each source's 4 classes.",
)
@click.option(
    "--epochs",
    type=option_type("epochs"),
    default=None,
    help="Training epochs of every model [default: each zoo recipe's].",
)
@click.option("--eps", type=float, default=0.1, show_default=True, help="L-inf radius of the PGD attacks.")
@click.option("--steps", type=int, default=50, show_default=True, help="PGD steps.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--run",
    "run_dir",
    type=PATH,
    default=None,
    help="A finished run on digits: write into RUN/knowledge and add the section to its report (its eps and seed are "
    "used).",
)
@click.option(
    "--out", type=PATH, default=None, help="Output folder [default: RUN/knowledge, or runs/knowledge-transfer]."
)
@click.option("--cache", type=PATH, default=None, help="Cache folder [default: the run's, or $ARCHSIM_CACHE].")
def knowledge_transfer(architectures, overlaps, epochs, eps, steps, seed, run_dir, out, cache) -> None:
    """Does adversarial transferability indicate knowledge transferability (docs/method.md#knowledge)? Liang et al.'s
    data-overlap experiment on digits: alphas, SAT and adversarial loss of each source against the
    accuracy of its retrained last layer on the target task, and their correlations."""
    from archsim.knowledge.overlap import overlap_experiment, overlap_on_run

    try:
        shares = tuple(int(v) for v in overlaps.split(","))
    except ValueError:
        raise ArchsimError(
            f"--overlaps {overlaps!r} must be whole percentages separated by commas, e.g. 0,50,100"
        ) from None
    chosen = tuple(a for a in architectures.split(",") if a)
    if run_dir is not None:
        study = overlap_on_run(run_dir, chosen, overlaps=shares, steps=steps, epochs=epochs, out=out, cache=cache)
    else:
        study = overlap_experiment(
            chosen,
            overlaps=shares,
            eps=eps,
            steps=steps,
            seed=seed,
            epochs=epochs,
            cache=cache,
            out=out or Path("runs") / "knowledge-transfer",
        )
    target = study.out
    _show(
        study.table,
        [
            "architecture",
            "overlap",
            "classes",
            "alpha_1_S_T",
            "alpha_2_S_T",
            "alpha_combined_S_T",
            "sat",
            "target_adv_loss",
            "transfer_accuracy",
        ],
    )
    click.echo("\ncorrelation with transfer accuracy:")
    _show(study.correlations)
    finish_on_run(run_dir, out, target)


@cli.command("liang-synthetic")
@click.option(
    "--data-dir",
    type=PATH,
    required=True,
    help="Folder with the synthetic data and weights (e.g. ../shared/data/liang_synthetic).",
)
@click.option("--out", type=PATH, required=True, help="Folder for the six CSVs and liang_synthetic.png.")
def liang_synthetic(data_dir, out) -> None:
    """Liang et al.'s synthetic experiment (docs/method.md#knowledge): alpha_1, alpha_2 (gamma), their combination,
    the gradient loss and the refit loss as the source drifts, for source widths 100, 50, 200 and attack levels 0, 1."""
    from archsim.knowledge.synthetic import liang_synthetic as run_synthetic

    results = run_synthetic(data_dir, out)
    for name, table in results.items():
        click.echo(name)
        _show(table)
    click.echo(wrote(out))


BEGAN = "archsim.began"
# Modification times may trail time.time() by a clock tick; a file written this close before the command began is not
# one of its own.
MTIME_SLACK_S = 0.05


def wrote(folder: Path) -> str:
    """ "wrote a.csv, b.png to FOLDER": the files under ``folder`` that this command wrote (changed since it began),
    read from the disk, so that the line says what the command did, not what it was meant to do."""
    began = click.get_current_context().meta.get(BEGAN, 0.0) - MTIME_SLACK_S
    files = sorted(
        str(p.relative_to(folder))
        for p in Path(folder).rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime >= began
    )
    return f"wrote {', '.join(files)} to {folder}" if files else f"wrote nothing new to {folder}"


def finish_on_run(run_dir: Path | None, out: Path | None, written: Path) -> None:
    """The files a command on a run wrote into ``written``, and where they went into the run folder (no ``out``
    given), the run's report refreshed to show them."""
    click.echo(wrote(written))
    if run_dir is not None and out is None:
        _refresh_report(run_dir)


def _refresh_report(run_dir: Path) -> None:
    """Rewrite the run's report so it shows what was just added to the run folder."""
    from archsim.report.analyze import analyze_run

    try:
        analyze_run(run_dir)
    except ArchsimError as error:
        click.echo(f"report not refreshed: {error}", err=True)
        return
    click.echo(f"updated {run_dir}/report.html")


@cli.command()
def zoo() -> None:
    """List the embedded zoo (trained on digits on first use)."""
    from archsim.models import ZOO
    from archsim.models.train import Recipe

    def compact(value) -> str:
        if isinstance(value, dict):
            return " ".join(
                f"{k}={compact(v) if not isinstance(v, dict) else '(' + compact(v) + ')'}" for k, v in value.items()
            )
        return "-".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)

    default = Recipe().describe()
    rows = pd.DataFrame(
        [
            {
                "spec": f"zoo:{name}",
                "family": e.family,
                "timm architecture": e.architecture,
                "shrunk to": compact(e.kwargs) or "(as registered)",
                "input": f"{e.input_side}px",
                "recipe": compact({k: v for k, v in e.recipe.describe().items() if v != default.get(k)}) or "default",
                "regime": e.regime,
                "seed": e.seed,
            }
            for name, e in ZOO.items()
        ]
    ).astype(str)
    left = {column: f"{{:<{rows[column].str.len().max()}}}".format for column in rows}  # text reads best left-aligned
    click.echo(rows.to_string(index=False, justify="left", formatters=left))
    extra = [f"zoo:{name}" for name, e in ZOO.items() if not e.in_default_run]
    if extra:
        click.echo(f"not in a run without --models: {', '.join(extra)} (for archsim checks --adversarial)")
    click.echo(f"default recipe: {compact({k: v for k, v in default.items() if k != 'trainer'})}")


@cli.group()
def cache() -> None:
    """Inspect and prune the result cache."""


@cache.command("list")
@click.option(
    "--cache", "root", type=PATH, default=None, help="Cache folder [default: $ARCHSIM_CACHE or ~/.cache/archsim]."
)
@click.option("--entries", is_flag=True, help="One line per entry instead of a summary per kind.")
def cache_list(root, entries) -> None:
    """Entries per kind (zoo weights, adversarial sets, predictions, ...) with their sizes."""
    from archsim.cache import CacheStore

    store = CacheStore(root)
    rows = pd.DataFrame(store.entries(), columns=["kind", "key", "bytes", "last_used", "path"])
    if rows.empty:
        click.echo(f"{store.root}: empty")
        return
    rows["last_used"] = pd.to_datetime(rows["last_used"], unit="s").dt.strftime("%Y-%m-%d %H:%M")
    if entries:
        click.echo(rows[["kind", "key", "bytes", "last_used"]].to_string(index=False))
    else:
        summary = rows.groupby("kind").agg(
            entries=("key", "size"),
            MiB=("bytes", lambda b: b.sum() / 2**20),
            oldest_use=("last_used", "min"),
            newest_use=("last_used", "max"),
        )
        click.echo(summary.reset_index().to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    click.echo(f"{store.root}: {len(rows)} entries, {rows['bytes'].sum() / 2**20:.1f} MiB")


@cache.command("prune")
@click.option(
    "--cache", "root", type=PATH, default=None, help="Cache folder [default: $ARCHSIM_CACHE or ~/.cache/archsim]."
)
@click.option(
    "--older-than", type=float, default=None, metavar="DAYS", help="Remove entries not used for this many days."
)
@click.option(
    "--run", "run_dir", type=PATH, default=None, help="Remove the entries a run folder used (its cache_entries.txt)."
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def cache_prune(root, older_than, run_dir, dry_run) -> None:
    """Remove entries by age or by run; anything removed is recomputed when next needed."""
    from archsim.cache import CacheStore

    store = CacheStore(root)
    entries, freed = store.prune(older_than, run_dir, dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {entries} entries, {freed / 2**20:.1f} MiB, from {store.root}")


def _print_analysis(result, out: Path) -> None:
    clusters = result.clusters
    click.echo(f"{len(clusters)} models in {clusters.cluster.nunique()} clusters")
    click.echo(result.spectral.search.describe())
    if result.stability is not None:
        click.echo(
            f"cluster stability (ARI over {len(result.stability)} subsamples): {result.stability.ari.mean():.2f} ± "
            f"{result.stability.ari.std():.2f}"
        )
    if result.component_baseline is not None:
        from archsim.analysis.baseline import describe_baseline

        click.echo(describe_baseline(result.component_baseline))
    if result.importance is not None:
        click.echo("top components:")
        click.echo(result.importance.head(5).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if result.training is not None:
        click.echo(result.training.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"wrote {', '.join(result.tables())} and report.html to {out}")


def _new_run_dir() -> Path:
    """``runs/<timestamp>``, made here so that runs started in the same second (a job array) get one each: ``-2``,
    ``-3``..."""
    stamp, n = datetime.now().strftime("%Y%m%d-%H%M%S"), 1
    while True:
        folder = Path("runs") / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)  # atomic: of two runs, one makes it and the other goes on to the next name
            return folder
        except FileExistsError:
            n += 1


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; no traceback."""
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    # A warning is a line for the user, like an error: the source line that raised it means nothing to them.
    formatwarning, warnings.formatwarning = (
        warnings.formatwarning,
        lambda message, category, *_: f"warning: {message}\n",
    )
    _show_traceback[0] = False
    try:
        cli.main(args=argv, standalone_mode=False)
    except ArchsimError as error:
        if _show_traceback[0]:
            traceback.print_exc()
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    # the machine's answer on a path (cannot be made, disk full, mount gone), not a bug to trace
    except OSError as error:
        if _show_traceback[0]:
            traceback.print_exc()
        where = f": {error.filename}" if error.filename else ""
        click.echo(
            f"error: {error.strerror or error}{where}; check that the path exists or can be made, is writable and has "
            f"space",
            err=True,
        )
        sys.exit(2)
    except click.exceptions.Abort:  # click's form of Ctrl-C
        click.echo(
            "interrupted; what was computed is in the cache: rerun the same command to go on from there", err=True
        )
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()} (see --help)", err=True)
        sys.exit(2)
    finally:
        warnings.formatwarning = formatwarning  # for callers in this process (tests)


if __name__ == "__main__":
    main()
