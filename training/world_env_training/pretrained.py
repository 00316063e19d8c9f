"""Pretrained artifacts shipped in the repository, so the embedded default starts from them.

A pretrained folder (``pretrained/embedded_default/`` is the one ``world-env pipeline`` uses by
default) holds the outputs of the training stages as the stages themselves would read them::

    manifest.json     what the folder is for, each artifact's source, config, command and
                      commit, and the sha256 and size of every file
    sft/              policy model folder (VLAPolicy.from_pretrained)
    world_model/      latent world-model folder, with its autoencoder/ and holdout.json
    reflector/        reflector model folder
    demos/ explore/ explore_more/   the datasets the models were trained on (DATASET.md)
    control/          optional: the control arm's policy (post-train --env libero from sft/),
                      with its run's metrics.jsonl; the pipeline evaluates it instead of training
                      the control arm when its config is the one the pipeline would run

Floating-point tensors are stored as float16 to keep the folder small; the models load them into
their float32 parameters (``load_state_dict`` casts). ``verify`` checks every file against the
manifest before a pipeline uses the folder, and fails naming the file that differs.

``python -m world_env_training.pretrained SPEC.json OUTPUT`` builds such a folder from training
runs: SPEC names, per artifact, its source folder and provenance (see ``export``);
``python -m world_env_training.pretrained --add SPEC.json FOLDER`` adds SPEC's artifacts to an
existing folder (``add``), leaving the others as they are.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

FORMAT = "world-env-pretrained"
VERSION = 1
MANIFEST = "manifest.json"
#: The folder ``world-env pipeline`` starts from by default, relative to the repository root.
EMBEDDED_DEFAULT = "pretrained/embedded_default"
#: Artifact name -> the pipeline stage whose output it replaces.
STAGES = {"demos": "collect-demos", "sft": "train-sft", "explore": "explore",
          "world_model": "train-world-model", "reflector": "train-reflector"}
#: Artifacts a folder may hold besides ``STAGES``: name -> the pipeline stage it may stand in for.
OPTIONAL = {"control": "post-train-libero"}
#: The pipeline stages a pretrained folder stands in for (the world model holds its autoencoder).
PIPELINE_STAGES = ("collect-demos", "train-sft", "explore", "train-autoencoder", "train-world-model",
                   "train-reflector")
#: Files a training run keeps that a model folder does not need (optimizer state, raw weights
#: of the EMA, logs); they are left out of an exported folder.
_SKIPPED = {"optimizer.pt", "train_weights.safetensors", "README.md"}


class PretrainedError(RuntimeError):
    """A pretrained folder is missing, incomplete or altered; the message names the file."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: str | Path) -> dict:
    """Check every file of ``folder`` against its manifest; return the manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise PretrainedError(f"{folder}: no {MANIFEST}; not a pretrained folder") from None
    except json.JSONDecodeError as e:
        raise PretrainedError(f"{folder / MANIFEST}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise PretrainedError(f"{folder / MANIFEST}: format {manifest.get('format')!r} version "
                              f"{manifest.get('version')!r}, expected {FORMAT!r} version {VERSION}")
    missing = [name for name in STAGES if name not in manifest["artifacts"]]
    if missing:
        raise PretrainedError(f"{folder / MANIFEST}: no artifact {', '.join(missing)}")
    for name, record in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise PretrainedError(f"{path}: missing (listed in {folder / MANIFEST})")
        if path.stat().st_size != record["bytes"] or sha256(path) != record["sha256"]:
            raise PretrainedError(f"{path}: sha256 or size differs from {folder / MANIFEST}; the file is "
                                  "corrupt or was changed (restore it with git checkout, or rebuild the "
                                  "folder with pipeline --pretrained '' and export)")
    return manifest


def _write_half(source: Path, target: Path) -> None:
    """Copy a safetensors file with its floating-point tensors as float16."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source))
    half = {}
    for key, value in tensors.items():
        if value.is_floating_point() and value.dtype != torch.float16:
            converted = value.to(torch.float16)
            if not torch.isfinite(converted).all():
                raise PretrainedError(f"{source}: tensor {key} overflows float16")
            value = converted
        half[key] = value.contiguous()
    save_file(half, str(target), metadata={"converted_from": "float32"})


def _copy_artifact(name: str, art: dict, output: Path) -> dict:
    """Copy one artifact of a spec into ``output/name``; its manifest record."""
    source, target = Path(art["source"]).resolve(), output / name
    if target.exists():
        raise FileExistsError(f"{target}: already exists; an artifact is written once")
    half = art.get("half", True)
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir() or rel.name in _SKIPPED or any(p.startswith(".") for p in rel.parts):
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        if half and path.suffix == ".safetensors" and path.name != "processor.safetensors":
            _write_half(path, target / rel)
        else:
            shutil.copyfile(path, target / rel)
    if "dataset_names" in art and (target / "holdout.json").is_file():
        holdout = json.loads((target / "holdout.json").read_text())
        holdout["datasets"] = [str(output / d) for d in art["dataset_names"]]
        (target / "holdout.json").write_text(json.dumps(holdout, indent=1))
    train_state = target / "train_state.json"
    config = json.loads(train_state.read_text())["train_config"] if train_state.is_file() else None
    if config is None and (target / "manifest.json").is_file():  # a dataset: its stage's config
        config = json.loads((target / "manifest.json").read_text())["info"].get("config")
    return {"stage": art["stage"], "source": art["source"], "command": art["command"], "commit": art["commit"],
            "config": config, "note": art.get("note", ""), "float16": half}


def _write_manifest(output: Path, manifest: dict) -> dict:
    manifest["files"] = {}
    for path in sorted(output.rglob("*")):
        if path.is_file() and path != output / MANIFEST:
            manifest["files"][str(path.relative_to(output))] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def export(spec: dict, output: str | Path) -> dict:
    """Build a pretrained folder at ``output`` from ``spec`` and return its manifest.

    spec: {"for": {...what the artifacts fit: suites, task_ids, resolution, profile},
    "artifacts": {name: {"source": model folder or dataset folder, "stage": world-env stage,
    "command": the command that produced it, "commit": the checkout it ran on, "note": ...,
    "half": bool (safetensors to float16; default true except datasets)}}}. A world model's
    ``holdout.json`` is rewritten to name the exported datasets (``dataset_names``: the
    artifact names of its datasets, in order), as paths joined to ``output`` as given: like every
    run path here, relative to the folder commands run in (the repository root).
    """
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"{output}: already exists; export writes a new folder")
    output.mkdir(parents=True)
    manifest = {"format": FORMAT, "version": VERSION, "for": spec["for"], "artifacts": {}}
    for name, art in spec["artifacts"].items():
        manifest["artifacts"][name] = _copy_artifact(name, art, output)
    return _write_manifest(output, manifest)


def add(spec: dict, folder: str | Path) -> dict:
    """Add ``spec["artifacts"]`` (as in ``export``) to the verified pretrained ``folder``; its new
    manifest. The folder's other files are checked first and kept as they are."""
    folder = Path(folder)
    manifest = verify(folder)
    for name, art in spec["artifacts"].items():
        if name in manifest["artifacts"]:
            raise FileExistsError(f"{folder}: already has an artifact {name!r}")
        if OPTIONAL.get(name) != art["stage"]:
            raise PretrainedError(f"{name!r} (stage {art['stage']}): not an artifact a folder may add "
                                  f"({', '.join(f'{k}: {v}' for k, v in OPTIONAL.items())})")
        manifest["artifacts"][name] = _copy_artifact(name, art, folder)
    return _write_manifest(folder, manifest)


def main(argv: list[str]) -> int:
    adding = argv[:1] == ["--add"]
    if adding:
        argv = argv[1:]
    if len(argv) != 2:
        print("usage: python -m world_env_training.pretrained [--add] SPEC.json FOLDER", file=sys.stderr)
        return 2
    manifest = (add if adding else export)(json.loads(Path(argv[0]).read_text()), argv[1])
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"{argv[1]}: {len(manifest['files'])} files, {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
