"""SAT between two timm models made in Python, on images held in a tensor: archsim from a notebook.

Run it as a script (``python docs/examples/notebook.py``) or cell by cell. It trains two
small timm networks for a few seconds on scikit-learn's digits, as a stand-in for the
models a notebook has just trained or loaded; with hub weights, ``timm.create_model(NAME,
pretrained=True)`` needs no preprocessing argument (archsim reads the module's timm data
config).
"""

import os

import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import archsim

torch.manual_seed(0)
digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16  # [N, 1, 8, 8] in [0, 1]
images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
labels = torch.tensor(digits.target)
train, held_out = slice(0, 1400), slice(1400, 1480)  # 80 held-out images: "a handful"

# Two architectures, made in Python; images 0..1 go in, each normalises them with its preprocessing.
resnet = timm.create_model("resnet10t", num_classes=10, in_chans=1)
vit = timm.create_model(
    "vit_tiny_patch16_224", num_classes=10, in_chans=1, img_size=32, patch_size=8, depth=2, embed_dim=96, num_heads=3
)
preprocess = {"input_size": (1, 32, 32), "mean": 0.5, "std": 0.5}
for net, epochs in ((resnet, 4), (vit, 8)):
    optimiser = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for start in range(0, 1400, 50):
            x, y = images[train][start : start + 50], labels[train][start : start + 50]
            loss = F.cross_entropy(net((x - 0.5) / 0.5), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()

# Models as objects, data as (images, labels, number of classes); everything is cached by content.
run = archsim.run_sat(
    {"resnet10t": (resnet, preprocess), "vit": (vit, preprocess)},
    data=(images[held_out], labels[held_out], 10),
    eps=25 / 255,  # digits are coarse (the default for images given in Python is 4/255)
    steps=10,
    cache=os.environ.get("ARCHSIM_CACHE"),
)
print(run.sat.round(2))  # in a notebook, `run` alone shows settings, heatmap and the extreme pairs
print(run.to_frame()[["source", "target", "sat", "sat_low", "sat_high"]].round(3))

# A second call with the same objects computes nothing; save and load round-trip exactly.
again = archsim.run_sat(
    {"resnet10t": (resnet, preprocess), "vit": (vit, preprocess)},
    data=(images[held_out], labels[held_out], 10),
    eps=25 / 255,
    steps=10,
    cache=os.environ.get("ARCHSIM_CACHE"),
)
assert again.cache_misses == 0
folder = run.save(os.environ.get("EXAMPLE_OUT", "runs/notebook"))
assert archsim.load_run(folder).to_frame().equals(run.to_frame())
print(f"saved to {folder}; `archsim report --run {folder}` writes its report")
