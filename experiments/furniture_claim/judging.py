"""Judging the furniture claim's runs on the test splits (clean, shifted, corrupted)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

# idle OpenMP threads sleep instead of spinning: on a shared CPU spinning threads of torch
# slow training several-fold; must be set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import stexture  # noqa: E402
from experiments.furniture_claim.arms import (  # noqa: E402
    SECOND_SEED,
    SEVERITY,
    SWEEPS,
    TEST_SPLITS,
    Scale,
    _arm_name,
)
from stexture.datasets import TYPICAL_MATERIALS  # noqa: E402
from stexture.shards import read_manifest  # noqa: E402
from stexture.shards.sources import key_from_relative_path  # noqa: E402
from stexture.training import (  # noqa: E402
    aux_bn,
    build_model,
    cue_conflict_metrics,
    predict,
)
from stexture.training.corruptions import CORRUPTIONS, CorruptedBatches  # noqa: E402


def _test_sets(dirs: dict[str, Path], data: Path, scale: Scale, view: str = "image"
               ) -> dict[str, tuple[Any, dict[str, np.ndarray]]]:
    """Per test split: its loader (showing ``view`` of the images) and, for the shifted one,
    the texture class of every image whose material is another class's typical one (-1
    otherwise), in loader order; for the image view also the corrupted clean test."""
    classes = read_manifest(dirs["train"]).classes
    owner = {m: classes.index(c) for c in classes for m in TYPICAL_MATERIALS[c]}
    with (data / "records.csv").open() as f:
        material = {key_from_relative_path(row["path"].split("/", 1)[1]): row["material"]
                    for row in csv.DictReader(f) if row["split"] == "test_shifted"}
    sets = {}
    for split in TEST_SPLITS:
        loader = stexture.make_eval_loader(dirs[split], kind="clean", split="train",
                                           batch_size=scale.batch_size, image_size=scale.size,
                                           num_workers=scale.workers, view=view)
        keys = [key for batch in loader for key in batch[2]["key"]]
        labels = np.concatenate([batch[1].argmax(1).numpy() for batch in loader])
        texture = np.array([owner.get(material.get(key, ""), -1) for key in keys])
        sets[split] = (loader, {"labels": labels, "texture": texture})
    if view != "image":
        return sets
    # the corrupted clean test set, made once: every model sees the same images
    profile = "cifar" if scale.size <= 64 else "imagenet"
    loader, meta = sets["test"]
    sets["corrupted"] = ({kind: list(CorruptedBatches(loader, kind, SEVERITY, profile=profile))
                          for kind in CORRUPTIONS}, meta)
    return sets


def _load(checkpoint: Path, aux: bool, classes: int, scale: Scale) -> torch.nn.Module:
    net = build_model(scale.model, classes)
    if aux:
        net = aux_bn(net)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    return net


def _score(record: dict[str, Any], split: str, pred: np.ndarray, meta: dict[str, np.ndarray]
           ) -> None:
    """Accuracy (and per image) of ``pred`` on ``split``; on the shifted test also the shape
    bias on the images whose material is another class's typical one."""
    correct = (pred == meta["labels"]).astype(int)
    record[split] = float(correct.mean())
    record[f"{split}_correct"] = correct.tolist()
    if split == "test_shifted":
        other = (meta["texture"] >= 0) & (meta["texture"] != meta["labels"])
        record["shifted_shape_bias"] = cue_conflict_metrics(
            pred[other], meta["labels"][other], meta["texture"][other])["shape_bias"]


def _judge(checkpoints: list[Path], aux: bool, sets: dict, classes: int, scale: Scale,
           device: str) -> dict[str, Any]:
    """Test results of a model (or of the ensemble averaging several models' probabilities)."""
    nets = [_load(checkpoint, aux, classes, scale) for checkpoint in checkpoints]
    record: dict[str, Any] = {"corruption": None}  # a layer model: not measured
    if "corrupted" in sets:
        batches, meta = sets["corrupted"]
        for kind in CORRUPTIONS:
            pred = predict(nets, batches[kind], device)["probs"].argmax(1)
            record[f"corrupt_{kind}"] = float((pred == meta["labels"]).mean())
        record["corruption"] = float(np.mean([record[f"corrupt_{kind}"]
                                              for kind in CORRUPTIONS]))
    for split in TEST_SPLITS:
        loader, meta = sets[split]
        _score(record, split, predict(nets, loader, device)["probs"].argmax(1), meta)
    return record


def _judge_layer_pair(checkpoints: dict[str, Path], sets: dict[str, dict], classes: int,
                      scale: Scale, device: str) -> dict[str, Any]:
    """The two layer models as one ensemble: the mean of the structure model's
    probabilities on the structure layer and the texture model's on the texture layer of
    the same test images (post hoc: are they complementary, as the report found?)."""
    nets = {view: _load(path, False, classes, scale) for view, path in checkpoints.items()}
    record: dict[str, Any] = {"corruption": None}
    for split in TEST_SPLITS:
        metas = [sets[view][split][1] for view in nets]
        if not all(np.array_equal(m["labels"], metas[0]["labels"]) for m in metas):
            raise RuntimeError(f"the layer views of {split} list other images")
        probs = sum(predict(net, sets[view][split][0], device)["probs"]
                    for view, net in nets.items()) / len(nets)
        _score(record, split, probs.argmax(1), metas[0])
    return record


CACHE_NAME = "test-results.json"  # every judged run's test results, by run folder


def _save_cache(out: Path, cache: dict[str, Any]) -> None:
    (out / CACHE_NAME).write_text(json.dumps(cache) + "\n")


def _layer_ensembles(out: Path, cache: dict, sets: dict[str, dict], dirs: dict[str, Path],
                     data: Path, scale: Scale, device: str) -> list[dict[str, Any]]:
    """A record per seed and training share with both layer models."""
    classes = len(read_manifest(dirs["train"]).classes)
    records = []
    for sweep, arm in (("teachers", "layers-ensemble"), ("teachers40", "layers-ensemble@40%")):
        for seed in range(scale.seeds):
            runs = out / f"sweep-{sweep}" / "runs"
            paths = {view: runs / f"{view}-seed{seed}" / "best.pt"
                     for view in ("structure", "texture")}
            if not all(path.is_file() for path in paths.values()):
                continue
            key = f"sweep-{sweep}/layers-ensemble-seed{seed}"
            if key not in cache:
                for view in paths:
                    if view not in sets:
                        sets[view] = _test_sets(dirs, data, scale, view)
                cache[key] = _judge_layer_pair(paths, sets, classes, scale, device)
                _save_cache(out, cache)
            records.append({"arm": arm, "seed": seed, "val": None, "shape_bias": None,
                            **cache[key]})
    return records


def _checkpoints_of(sweep: str, result: dict[str, Any], run_dir: Path) -> list[Path]:
    """The checkpoint(s) a run is judged with: the k=0 and k=1 models of its seed for the
    sweep's ensemble run."""
    if result["kind"] == "ensemble":
        return [run_dir.parent / f"k{k}-seed{result['seed']}" / "best.pt" for k in (0, 1)]
    if sweep.startswith("oracle"):
        return [Path(result["metrics"]["checkpoint_file"])]
    return [run_dir / (result.get("checkpoint") or "-")]


def collect_runs(out: Path, dirs: dict[str, Path], data: Path, scale: Scale, device: str
                 ) -> list[dict[str, Any]]:
    """One record per trained run: sweep metrics and test results (cached in
    ``out/test-results.json``)."""
    cache_path = out / CACHE_NAME
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    classes = len(read_manifest(dirs["train"]).classes)
    sets: dict[str, dict] = {}  # per view, made when first needed
    records = []
    for sweep in SWEEPS:
        folder = out / f"sweep-{sweep}"
        if not (folder / "sweep.json").is_file():
            continue
        aux = (json.loads((folder / "sweep.json").read_text())["aux_bn"]
               or sweep.startswith("oracle"))
        for result_path in sorted(folder.glob("runs/*/result.json")):
            result = json.loads(result_path.read_text())
            arm = _arm_name(sweep, result)
            # the second vanilla model of seed s trains with seed s + SECOND_SEED
            seed = result["seed"] - (SECOND_SEED if sweep == "vanilla2" else 0)
            # seed filter: e.g. --report-only --seeds 5 keeps whole seeds
            if arm is None or seed >= scale.seeds:
                continue
            checkpoints = _checkpoints_of(sweep, result, result_path.parent)
            if not all(checkpoint.is_file() for checkpoint in checkpoints):
                continue
            key = str(result_path.parent.relative_to(out))
            if "corruption" not in cache.get(key, {}):
                view = result["kind"] if result["kind"] in ("structure", "texture") else "image"
                if view not in sets:
                    sets[view] = _test_sets(dirs, data, scale, view)
                cache[key] = _judge(checkpoints, aux, sets[view], classes, scale, device)
                _save_cache(out, cache)
            records.append({"arm": arm, "seed": seed,
                            "val": result["metrics"].get("clean_acc"),
                            "shape_bias": result["metrics"].get("shape_bias"), **cache[key]})
    return (records + _layer_ensembles(out, cache, sets, dirs, data, scale, device)
            + _vanilla_ensembles(out, cache, sets, dirs, data, scale, device))


def _vanilla_ensembles(out: Path, cache: dict, sets: dict[str, dict], dirs: dict[str, Path],
                       data: Path, scale: Scale, device: str) -> list[dict[str, Any]]:
    """A record per seed with both vanilla models (the layer ensemble's control: two
    models' training, one view)."""
    classes = len(read_manifest(dirs["train"]).classes)
    records = []
    for seed in range(scale.seeds):
        paths = [out / "sweep-replace" / "runs" / f"vanilla-seed{seed}" / "best.pt",
                 out / "sweep-vanilla2" / "runs" / f"vanilla-seed{seed + SECOND_SEED}" /
                 "best.pt"]
        if not all(path.is_file() for path in paths):
            continue
        key = f"sweep-vanilla2/vanilla-ensemble-seed{seed}"
        if "corruption" not in cache.get(key, {}):
            if "image" not in sets:
                sets["image"] = _test_sets(dirs, data, scale, "image")
            cache[key] = _judge(paths, False, sets["image"], classes, scale, device)
            _save_cache(out, cache)
        records.append({"arm": "vanilla-ensemble", "seed": seed, "val": None,
                        "shape_bias": None, **cache[key]})
    return records


# ---------------------------------------------------------------------------- the table
