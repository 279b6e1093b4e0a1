"""Pin the SAT paper's models to the weights timm 0.6.7 (the paper's) loaded, as timm 1.0 tags; write the zoo file.

timm 0.6.7 is never a dependency: its wheel, unpacked into a folder (``pip download --no-deps timm==0.6.7``, then
unzip), is read by a child process that imports it from there and prints each paper model's default configuration
(weights URL, input size, crop, interpolation). Each is matched to the tag of timm 1.0 (this environment) that holds
the same weights:

1. ``url``: a tag whose weights URL names the same file;
2. ``only tag``: the architecture has one pretrained tag in timm 1.0 (its weights moved to the hub under the tag and
   lost the URL, and there is nothing else they could be);
3. ``by hand``: named below with the reason.

It prints every model where no tag matches, and every pinned tag whose data config differs from 0.6.7's for the same
weights, and writes ``zoos/sat-paper.txt`` and ``zoos/sat-paper-weights.csv`` (the match of every model).

    python scripts/pin_paper_weights.py /tmp/timm-0.6.7 [--matrix ../shared/data/sat_release/SAT_release.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import timm
from timm.models import _registry

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MATRIX = ROOT.parent / "shared" / "data" / "sat_release" / "SAT_release.csv"
BY_HAND = {
    # 0.6.7's file is regnetx_320-8ea38b93.pth from timm's v0.1-regnet release: the weights ported from pycls.
    # timm 1.0 has them as pycls_in1k (no URL: moved to the hub) beside tv2_in1k, torchvision's newer recipe.
    "regnetx_320": (
        "pycls_in1k",
        "0.6.7's file is the pycls port (timm's v0.1-regnet release); tv2_in1k is torchvision's",
    ),
}
FIELDS = ("url", "input_size", "crop_pct", "interpolation", "mean", "std")
DUMP = """
import json, sys
sys.path.insert(0, sys.argv[1])
import timm
from timm.models import registry
assert timm.__version__ == "0.6.7", timm.__version__
names = json.loads(sys.argv[2])
cfgs = {}
for name in names:
    cfg = registry._model_pretrained_cfgs.get(name)
    # As 0.6.7's create_transform saw it: its own resolution fills what the configuration leaves out.
    resolved = {} if cfg is None else timm.data.resolve_data_config({}, default_cfg=cfg)
    cfgs[name] = None if cfg is None else {"url": cfg.get("url"), **{k: resolved.get(k) for k in %r}}
print(json.dumps(cfgs))
""" % (FIELDS[1:],)


def old_configs(timm_067: Path, names: list[str]) -> dict[str, dict | None]:
    done = subprocess.run(
        [sys.executable, "-c", DUMP, str(timm_067), json.dumps(names)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def file_of(url: str | None) -> str | None:
    return url.rsplit("/", 1)[-1] if url else None


def match(name: str, old: dict | None) -> dict:
    row = {"paper_name": name, "timm_067_url": old["url"] if old else None}
    if old is None:
        return {**row, "spec": None, "how": "none", "why": "timm 0.6.7 has no pretrained configuration of this name"}
    if not timm.is_model(name):
        return {**row, "spec": None, "how": "none", "why": "timm 1.0 has no model of this name (nor an alias)"}
    arch = _registry.get_arch_name(_registry.get_deprecated_models().get(name) or name)
    tags = _registry.get_arch_pretrained_cfgs(arch)
    by_url = [tag for tag, cfg in tags.items() if cfg.url and file_of(cfg.url) == file_of(old["url"])]
    if by_url:
        tag, how, why = by_url[0], "url", f"the same file, {file_of(old['url'])}"
    elif name in BY_HAND:
        tag, how, why = f"{arch}.{BY_HAND[name][0]}", "by hand", BY_HAND[name][1]
    elif len(tags) == 1:
        tag, how, why = next(iter(tags)), "only tag", f"{arch} has one pretrained tag in timm 1.0"
    else:
        return {**row, "spec": None, "how": "none", "why": f"no tag of {arch} names {file_of(old['url'])}"}
    new = {**tags[tag].to_dict(), **timm.data.resolve_data_config(pretrained_cfg=tags[tag].to_dict())}
    differs = [
        field
        for field in ("input_size", "crop_pct", "interpolation", "mean", "std")
        if not _same(old.get(field), new.get(field))
    ]
    # The paper evaluated with 0.6.7's crop: where timm 1.0 changed it for the same weights, the spec keeps 0.6.7's.
    crop = f",crop_pct={old['crop_pct']}" if "crop_pct" in differs else ""
    return {
        **row,
        "spec": f"timm:{tag},name={name}{crop}",
        "tag": tag,
        "how": how,
        "why": why,
        "hub_id": new.get("hf_hub_id"),
        "config_differs": " ".join(f"{f}: {old.get(f)} -> {new.get(f)}" for f in differs),
    }


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("timm_067", type=Path, help="folder holding timm 0.6.7's package (the unpacked wheel)")
    parser.add_argument("--matrix", type=Path, default=DEFAULT_MATRIX, help="the published matrix: its model names")
    args = parser.parse_args()
    names = list(pd.read_csv(args.matrix, index_col=0).index)
    rows = [match(name, cfg) for name, cfg in old_configs(args.timm_067, names).items()]
    table = pd.DataFrame(rows)
    unmatched = table[table.spec.isna()]
    print(f"{len(table) - len(unmatched)} of {len(table)} paper models pinned to a timm {timm.__version__} tag:")
    print(table.how.value_counts().to_string())
    print("\nno tag matches:")
    print(unmatched[["paper_name", "why"]].to_string(index=False) if len(unmatched) else "  none")
    changed = table[table.config_differs.fillna("") != ""]
    print("\npinned tags whose data config differs from 0.6.7's for the same weights (the spec keeps 0.6.7's crop):")
    print(changed[["paper_name", "tag", "config_differs"]].to_string(index=False) if len(changed) else "  none")
    table.to_csv(ROOT / "zoos" / "sat-paper-weights.csv", index=False)
    pinned = table.dropna(subset=["spec"])
    header = [
        "# The SAT paper's ImageNet models (Hwang et al., ECCV 2024), pinned to the weights timm 0.6.7 (the paper's",
        f"# timm) loaded, as timm 1.0 tags; {len(pinned)} of its {len(table)} ("
        + "; ".join(f"{r.paper_name}: {r.why}" for r in unmatched.itertuples())
        + ").",
        "# Made by scripts/pin_paper_weights.py, which says how each tag was matched (zoos/sat-paper-weights.csv).",
        "# Each keeps the paper's name (name=), so the run's matrix lines up with SAT_release.csv, and 0.6.7's crop",
        "# (crop_pct=) where timm 1.0 changed it for the same weights. Add ,pretrained=false to a line (or see",
        "# make test-scale) for random weights.",
    ]
    (ROOT / "zoos" / "sat-paper.txt").write_text("\n".join(header + list(pinned.spec)) + "\n")
    print(f"\nwrote zoos/sat-paper.txt ({len(pinned)} models) and zoos/sat-paper-weights.csv")


if __name__ == "__main__":
    main()
