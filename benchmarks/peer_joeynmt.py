"""Peer benchmark: attn-suite vs JoeyNMT 2.3.0 on the same Tatoeba pairs, the same wall time, the same threads.

Both toolkits train on the training split our `TranslationDataModule` makes of `spa.txt` and are scored with
sacrebleu (cased, detokenized, beam 5) on the same test pairs, at several points of a wall-clock budget
(a learning curve: the last checkpoint each toolkit wrote before the mark). JoeyNMT never becomes a
dependency of the project: `--setup` installs it into its own virtual environment under `.peer/joeynmt`
(git-ignored), with the same torch as ours.

    python benchmarks/peer_joeynmt.py --setup
    python benchmarks/peer_joeynmt.py --toolkit both --minutes 30 --marks 5 10 20 30 --threads 2 --seed 0 \\
        --data ../shared/data/spa-eng/spa.txt --out benchmarks/results/peer_tatoeba_seed0.json

Fairness: JoeyNMT gets the same model size, vocabulary size (joint sentencepiece BPE, its own tokenizer
type), token budget per batch, learning rate, warm-up and validation rhythm as our CPU recipe
(`configs/translation/tatoeba_cpu.yaml`), label smoothing, tied embeddings and inverse-sqrt schedule; the
settings its documentation offers for CPUs are used (`use_cuda: False`, token batches, no fp16, 0 workers).
It is stopped at the budget by SIGINT, which it turns into a clean exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / ".peer" / "joeynmt"
JOEY_PY = PEER / "bin" / "python"
PINS = ["torch==2.11.0", "joeynmt==2.3.0", "sentencepiece==0.2.1", "importlib_metadata"]


def setup() -> None:
    """Create the JoeyNMT virtual environment (once)."""
    if JOEY_PY.is_file() and subprocess.run([str(JOEY_PY), "-c", "import joeynmt, sentencepiece"]).returncode == 0:
        print(f"JoeyNMT environment ready: {PEER}")
        return
    subprocess.run([sys.executable, "-m", "venv", str(PEER)], check=True)
    subprocess.run([str(JOEY_PY), "-m", "pip", "install", "-q", *PINS], check=True)


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


def recipe(config: Path) -> dict[str, Any]:
    """Our CPU recipe's model / data / trainer settings (the YAML, plus LightningCLI's defaults we rely on)."""
    import yaml

    return yaml.safe_load(config.read_text(encoding="utf-8"))


def write_splits(
    data: str, work: Path, cfg: dict[str, Any], limit: int | None = None
) -> dict[str, list[tuple[str, str]]]:
    """Our data module's train / val / test pairs, written as `<split>.en` / `<split>.es` for JoeyNMT."""
    from tasks.translation.data import TranslationDataModule

    dm = TranslationDataModule(**{**cfg["data"], "path": data})  # our recipe's exact split settings
    splits = dm.load_splits()
    work.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        splits = {**splits, "test": splits["test"][:limit]}
    for name, pairs in splits.items():
        (work / f"{name}.en").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (work / f"{name}.es").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return splits


def joey_config(work: Path, cfg: dict[str, Any], seed: int, validation_freq: int) -> Path:
    """A JoeyNMT config with our recipe's sizes; a joint sentencepiece BPE trained on the training split."""
    m, d, t = cfg["model"], cfg["data"], cfg["trainer"]
    vocab = int(d.get("vocab_size", 8000))
    spm = work / "spm"
    if not (spm.with_suffix(".model")).is_file():
        code = (
            "import sentencepiece as s, sys; s.SentencePieceTrainer.train(input=sys.argv[1] + ',' + sys.argv[2], "
            "model_prefix=sys.argv[3], vocab_size=int(sys.argv[4]), model_type='bpe', character_coverage=1.0, "
            "unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1)"
        )
        subprocess.run(
            [str(JOEY_PY), "-c", code, str(work / "train.en"), str(work / "train.es"), str(spm), str(vocab - 3)],
            check=True,
            capture_output=True,
        )
        pieces = [ln.split("\t")[0] for ln in spm.with_suffix(".vocab").read_text(encoding="utf-8").splitlines()]
        # JoeyNMT's ids: <unk> 0, <pad> 1, <s> 2, </s> 3, then the pieces (sentencepiece's own <unk> first)
        (work / "vocab.txt").write_text(
            "\n".join(["<unk>", "<pad>", "<s>", "</s>", *pieces[1:]]) + "\n", encoding="utf-8"
        )
    side = {
        "max_length": 100,
        "lowercase": False,
        "normalize": False,
        "level": "bpe",
        "voc_file": str(work / "vocab.txt"),
        "tokenizer_type": "sentencepiece",
        "tokenizer_cfg": {"model_file": str(spm.with_suffix(".model"))},
    }
    layer = {
        "type": "transformer",
        "num_layers": int(m["encoder_layers"]),
        "num_heads": int(m["num_heads"]),
        "embeddings": {"embedding_dim": int(m["hidden_dim"]), "scale": True},
        "hidden_size": int(m["hidden_dim"]),
        "ff_size": int(m["ffn_dim"]),
        "dropout": float(m.get("dropout", 0.1)),
        "layer_norm": "pre",
    }
    config = {
        "name": "peer",
        "joeynmt_version": "2.3.0",
        "model_dir": str(work / "joey_model"),
        "use_cuda": False,
        "random_seed": seed,
        "data": {
            "train": str(work / "train"),
            "dev": str(work / "val"),
            "test": str(work / "test"),
            "dataset_type": "plain",
            "sample_dev_subset": int(m.get("val_bleu_sentences") or 500),
            "src": {"lang": "en", **side},
            "trg": {"lang": "es", **side},
        },
        "testing": {
            "beam_size": 5,
            "beam_alpha": 1.0,
            "batch_size": 2048,
            "batch_type": "token",
            "eval_metrics": ["bleu"],
            "sacrebleu_cfg": {"tokenize": "13a"},
        },
        "training": {
            "optimizer": "adamw",
            "adam_betas": [0.9, 0.98],
            "learning_rate": float(m["lr"]),
            "learning_rate_min": 1e-8,
            "learning_rate_warmup": int(m["warmup_steps"]),
            "scheduling": "warmupinversesquareroot",
            "weight_decay": float(m.get("weight_decay", 0.0)),
            "label_smoothing": float(m.get("label_smoothing", 0.1)),
            "clip_grad_norm": 1.0,
            "batch_size": int(d["max_tokens"]),
            "batch_type": "token",
            "epochs": 1000,
            "validation_freq": validation_freq,
            "logging_freq": min(100, validation_freq),
            "early_stopping_metric": "bleu",
            "keep_best_ckpts": -1,
            "overwrite": True,
            "shuffle": True,
            "print_valid_sents": [],
            "num_workers": 0,
        },
        "model": {
            "initializer": "xavier_uniform",
            "embed_initializer": "xavier_uniform",
            "bias_initializer": "zeros",
            "tied_embeddings": True,
            "tied_softmax": True,
            "encoder": layer,
            "decoder": {**layer, "num_layers": int(m["decoder_layers"])},
        },
    }
    del t
    path = work / "joey.yaml"
    path.write_text(_yaml(config), encoding="utf-8")
    return path


def _snapshot(
    pattern_dir: Path, glob: str, marks: list[float], budget: float, start: float, dest: Path
) -> threading.Thread:
    """A thread that, at each mark (minutes after `start`), copies the newest matching checkpoint to
    `dest/<mark>.ckpt` (the state a user would have if they stopped there)."""

    def run() -> None:
        for mark in [m for m in marks if m < budget]:  # the end of the budget: the final checkpoint, after exit
            wait = start + 60 * mark - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            found = sorted(pattern_dir.glob(glob), key=lambda p: p.stat().st_mtime) if pattern_dir.is_dir() else []
            found = [p for p in found if not p.is_symlink()]
            if found:
                shutil.copy2(found[-1], dest / f"{mark:g}.ckpt")

    dest.mkdir(parents=True, exist_ok=True)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def run_joeynmt(work: Path, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train JoeyNMT for the budget, snapshot at the marks, then translate the test set from each snapshot."""
    freq = args.validation_freq
    config = joey_config(work, cfg, args.seed, freq)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    model_dir = work / "joey_model"
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(JOEY_PY), "-m", "joeynmt", "train", str(config), "--skip-test"],
        env=env,
        stdout=open(work / "joey_train.log", "w"),
        stderr=subprocess.STDOUT,
        # A process started in the background by a non-interactive shell (`cmd &`) inherits SIGINT as
        # ignored, and so would JoeyNMT: its clean stop below would never come. Restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    snap = _snapshot(model_dir, "[0-9]*.ckpt", args.marks, args.minutes, start, work / "joey_marks")
    deadline = start + 60 * args.minutes
    try:
        proc.wait(timeout=60 * args.minutes + 5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # JoeyNMT's own clean stop: it saves the current weights
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()  # it did not stop: the budget's mark falls back to its last checkpoint in time
            proc.wait()
    snap.join(timeout=120)
    # The budget's mark: the checkpoint JoeyNMT saved on SIGINT, else the newest one written within the budget
    # (60 s of grace for the save itself).
    cutoff = time.time() + (deadline - time.monotonic()) + 60  # the deadline as a file time
    saved = [p for p in model_dir.glob("[0-9]*.ckpt") if p.stat().st_mtime <= cutoff]
    final = max(saved, key=lambda p: p.stat().st_mtime) if saved else None
    for mark in [m for m in args.marks if m >= args.minutes]:
        if final is not None:
            shutil.copy2(final, work / "joey_marks" / f"{mark:g}.ckpt")
    steps = max((int(p.stem) for p in model_dir.glob("[0-9]*.ckpt")), default=None)  # its checkpoints: step.ckpt
    curve = {}
    for mark in args.marks:
        ckpt = work / "joey_marks" / f"{mark:g}.ckpt"
        curve[f"{mark:g}"] = _joey_score(work, config, ckpt, env) if ckpt.is_file() else None
    return {"toolkit": "joeynmt 2.3.0", "updates": steps, "bleu_at_minutes": curve}


def _joey_score(work: Path, config: Path, ckpt: Path, env: dict[str, str]) -> float:
    import yaml

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg["testing"]["load_model"] = str(ckpt)
    test_cfg = work / f"joey_test_{ckpt.stem}.yaml"
    test_cfg.write_text(_yaml(cfg), encoding="utf-8")
    # Hypotheses from stdout: JoeyNMT 2.3.0's `translate -o FILE` with piped input fails (`args.n_best`); its
    # log goes to stderr.
    proc = subprocess.run(
        [str(JOEY_PY), "-m", "joeynmt", "translate", str(test_cfg)],
        env=env,
        check=True,
        stdin=open(work / "test.en"),
        capture_output=True,
        text=True,
    )
    hyps = proc.stdout.splitlines()
    (work / f"joey_hyp_{ckpt.stem}.es").write_text(proc.stdout, encoding="utf-8")
    return _bleu(hyps, (work / "test.es").read_text(encoding="utf-8").splitlines())


def _bleu(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return round(float(sacrebleu.corpus_bleu(hyps, [refs]).score), 2)  # cased, 13a, detokenized input


def run_ours(work: Path, config: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train our CPU recipe for the budget through the CLI, snapshot at the marks, translate the test set."""
    root = work / "ours"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable,
        "-m",
        "tasks.translation.cli",
        "fit",
        "--config",
        str(config),
        "--data.path",
        args.data,
        "--trainer.default_root_dir",
        str(root),
        "--trainer.max_time",
        f"00:00:{args.minutes:02d}:00",
        "--seed_everything",
        str(args.seed),
        "--trainer.enable_progress_bar",
        "false",
    ]
    start = time.monotonic()
    snap = _snapshot(root / "checkpoints", "last.ckpt", args.marks, args.minutes, start, work / "ours_marks")
    log = open(work / "ours_train.log", "w")
    subprocess.run(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
    snap.join(timeout=120)
    final = root / "checkpoints" / "last.ckpt"  # RunCheckpoint writes the final state when max_time stops fit
    for mark in [m for m in args.marks if m >= args.minutes]:
        if final.exists():
            shutil.copy2(final, work / "ours_marks" / f"{mark:g}.ckpt")
    import torch

    from tasks.translation.module import TranslationModule

    torch.set_num_threads(args.threads)
    src = (work / "test.en").read_text(encoding="utf-8").splitlines()
    refs = (work / "test.es").read_text(encoding="utf-8").splitlines()
    curve, steps = {}, None
    for mark in args.marks:
        ckpt = work / "ours_marks" / f"{mark:g}.ckpt"
        if not ckpt.is_file():
            curve[f"{mark:g}"] = None
            continue
        model = TranslationModule.load_from_checkpoint(ckpt)
        steps = int(torch.load(ckpt, weights_only=True).get("global_step", 0))
        curve[f"{mark:g}"] = _bleu(model.translate(src, beam=5, batch_size=128), refs)
    return {"toolkit": "attn-suite", "updates_at_last_mark": steps, "bleu_at_minutes": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="create the JoeyNMT environment and exit")
    p.add_argument("--toolkit", choices=["ours", "joeynmt", "both"], default="both")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "spa-eng" / "spa.txt"))
    p.add_argument("--config", type=Path, default=REPO / "configs" / "translation" / "tatoeba_cpu.yaml")
    p.add_argument("--minutes", type=int, default=30)
    p.add_argument("--marks", type=float, nargs="+", default=[5, 10, 20, 30])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--validation-freq",
        type=int,
        default=500,
        help="JoeyNMT validation (and checkpoint) interval in updates; match our recipe's rhythm",
    )
    p.add_argument("--test-limit", type=int, default=None, help="score only the first N test pairs (smoke runs)")
    p.add_argument("--work", type=Path, default=REPO / ".peer" / "work")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.setup:
        setup()
        return
    cfg = recipe(args.config)
    work = args.work / f"seed{args.seed}"
    write_splits(args.data, work, cfg, args.test_limit)
    load = os.getloadavg()
    result: dict[str, Any] = {
        "config": str(args.config.relative_to(REPO)),
        "minutes": args.minutes,
        "threads": args.threads,
        "seed": args.seed,
        "load_average_at_start": load,
        "runs": [],
    }
    if args.toolkit in ("ours", "both"):
        result["runs"].append(run_ours(work, args.config, args))
    if args.toolkit in ("joeynmt", "both"):
        if not JOEY_PY.is_file():
            sys.exit("run with --setup first (creates .peer/joeynmt)")
        result["runs"].append(run_joeynmt(work, cfg, args))
    result["load_average_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
