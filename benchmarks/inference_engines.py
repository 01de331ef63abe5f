"""Translation inference on the engines users deploy: ours in PyTorch (lean), on CTranslate2 and on ONNX Runtime,
against Hugging Face ``MarianMTModel.generate`` and CTranslate2 running a MarianMT of the same size (issue 25).

For each model size (``cpu``: the CPU recipe's 3+3 layers, d 256, 8k vocabulary; ``base``: 6+6, d 512) it writes
our model folder (``--ckpt``: a trained one, e.g. the CPU recipe's checkpoint; else random weights and a BPE
tokenizer trained on the sentences), exports it with ``attn-translate export --format ctranslate2|onnx`` (fp32 and
int8), and saves a random ``MarianMTModel`` of the same size with the same tokenizer, converted to CTranslate2 by its
own converter (``ctranslate2.converters.TransformersConverter``, from the local folder: no download). Then:

* **start-up** -- wall time of a fresh ``python -c`` process that loads the model and translates one sentence (beam
  5), alternated across engines, median of ``--startup-runs``;
* **batch-1 latency** -- median seconds to translate one sentence (beam 5), over ``--latency-sentences``;
* **throughput** -- sentences/s and generated tokens/s over ``--sentences`` sentences in batches of 32, greedy and
  beam 5, at 1 and 2 threads (``torch.set_num_threads``, CTranslate2 ``intra_threads``, ONNX Runtime
  ``intra_op_num_threads``), rounds alternated (engine order reversed every round), medians reported.

Our three engines translate the same sentences and, greedy, give the same tokens (tests/tasks/test_translation_ct2.py,
test_translation_onnx.py), so their throughputs compare directly. The MarianMT rows have random weights: their outputs
are forced to our greedy output's length per batch (``min_decoding_length = max_decoding_length``; ``generate``'s
``min_new_tokens = max_new_tokens``), so compare them by **tokens/s**. The export check is ``ours CT2 (forced)``: our
exported model through the same CTranslate2 call with the same forced lengths as CTranslate2's own MarianMT: the same
engine doing the same work, so a gap beyond ~10 % would mean the export is wrong.

``--quality`` also scores BLEU (sacrebleu, beam 5) of every engine of a trained ``--ckpt`` on its test split (the
Tatoeba recipe's: ``--data-config``), the int8 loss against fp32.

Usage::

    python benchmarks/inference_engines.py --ckpt .peer/i25/model --data-config configs/translation/tatoeba_cpu.yaml \\
        --sizes cpu base --quality --out benchmarks/results/inference_engines.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SIZES: dict[str, dict[str, int]] = {
    "cpu": {"d_model": 256, "layers": 3, "heads": 4, "ffn_dim": 1024, "vocab": 8000},
    "base": {"d_model": 512, "layers": 6, "heads": 8, "ffn_dim": 2048, "vocab": 8000},
}
BATCH = 32
ONE = "I would like a cup of coffee, please."


# ------------------------------------------------------------------------------------------------ models
def sentences(data_config: str | None, n: int) -> tuple[list[str], list[str] | None]:
    """``n`` test sentences (and references) of the recipe's split, or generated English when there is no data."""
    if data_config is not None and Path(data_config).is_file():
        import yaml

        from tasks.translation.data import TranslationDataModule

        data = yaml.safe_load(Path(data_config).read_text(encoding="utf-8"))["data"]
        if Path(data["path"]).is_file():
            dm = TranslationDataModule(**data)
            dm.prepare_data()
            test = dm.load_splits()["test"][:n]
            return [s for s, _ in test], [r for _, r in test]
    from tasks.translation.demo import build, held_out

    dm, _ = build(data={"n_pairs": max(4 * n, 2000), "test_size": n, "val_size": 20})
    test = held_out(dm, n)
    return [s for s, _ in test], [r for _, r in test]


def random_folder(size: str, texts: list[str], work: Path, tokenizer: Any | None) -> Path:
    """A random Transformer of ``size`` with ``tokenizer`` (the trained model's) or a BPE tokenizer trained on
    ``texts``, as a model folder.

    PAD and BOS get no mass (as in a trained model; the engines suppress them differently, see
    ``tasks.translation.ct2``).
    """
    from core.text.tokenizers import BOS_ID, PAD_ID, SubwordTokenizer
    from tasks.translation.module import TranslationModule

    cfg = SIZES[size]
    torch.manual_seed(0)
    tok = tokenizer or SubwordTokenizer.train(texts * 4, vocab_size=cfg["vocab"], min_freq=1)
    model = TranslationModule(
        arch="transformer",
        hidden_dim=cfg["d_model"],
        num_heads=cfg["heads"],
        ffn_dim=cfg["ffn_dim"],
        encoder_layers=cfg["layers"],
        decoder_layers=cfg["layers"],
        tie_embeddings=True,
        dropout=0.0,
        plot_examples=0,
        max_len=60,
    )
    model.set_tokenizers(tok, tok)
    model.build_model()
    with torch.no_grad():
        net = model.model
        net.decoder.norm.weight[0], net.decoder.norm.bias[0] = 0.0, 1.0
        net.out.weight[[PAD_ID, BOS_ID], 0] = -60.0
    return Path(model.save_pretrained(work / f"ours_{size}"))


def marian_folder(size: str, tokenizer_json: Path, vocab: int, work: Path) -> Path:
    """A random ``MarianMTModel`` of ``size`` (ours' vocabulary size) saved with a fast tokenizer of our vocabulary
    (CTranslate2's converter reads its special tokens and vocabulary)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from translation_vs_marian import build_marian

    # CTranslate2's Marian converter drops the last embedding row (transformers' appended <pad>): one spare row
    cfg = {**SIZES[size], "vocab": vocab + 1, "seq": 256}
    torch.manual_seed(0)
    model = build_marian(cfg, 0.0).eval()
    out = work / f"marian_{size}"
    model.save_pretrained(out)
    hf = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    tok = Tokenizer.from_str(hf["json"] if "json" in hf else tokenizer_json.read_text(encoding="utf-8"))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(out)
    return out


def convert_marian(folder: Path, quantize: str) -> Path:
    from ctranslate2.converters import TransformersConverter

    out = folder.with_name(f"{folder.name}_ct2_{quantize}")
    TransformersConverter(str(folder)).convert(
        str(out), quantization=None if quantize == "float32" else quantize, force=True
    )
    return out


def exports(folder: Path, work: Path, size: str, device: str = "cpu") -> dict[str, Path | str]:
    """Our model on each engine: ``{row: export folder}``, or the reason it could not be exported (on a GPU also
    CTranslate2's fp16 and int8 + fp16 weights)."""
    from core.errors import UserError
    from tasks.translation.export import export_ctranslate2, export_onnx

    out: dict[str, Path | str] = {"ours PyTorch": folder}
    todo = [
        ("ours CT2 fp32", export_ctranslate2, "float32"),
        ("ours CT2 int8", export_ctranslate2, "int8"),
        ("ours ORT fp32", export_onnx, "float32"),
        ("ours ORT int8", export_onnx, "int8"),
    ]
    if device != "cpu":
        todo += [
            ("ours CT2 fp16", export_ctranslate2, "float16"),
            ("ours CT2 int8_fp16", export_ctranslate2, "int8_float16"),
        ]
    for row, fn, q in todo:
        try:
            out[row] = fn(str(folder), str(work / f"{size}_{row.split()[1]}_{q}"), q, True)
        except UserError as err:
            out[row] = f"not exported: {err}"
    return out


# ------------------------------------------------------------------------------------------------ engines
class Engine:
    """One row: ``run(texts, beam) -> generated tokens`` (EOS included), loaded for a thread count."""

    def __init__(self, name: str, run: Callable[[list[str], int], int]) -> None:
        self.name, self.run = name, run


def ours(name: str, path: Path, threads: int, device: str = "cpu") -> Engine:
    from tasks.translation.inference import Translator

    torch.set_num_threads(threads)
    tr = Translator.from_pretrained(path, threads=threads, map_location=device)

    def run(texts: list[str], beam: int) -> int:
        hyps = tr.translate(texts, beam=beam, batch_size=BATCH, return_attention=False)
        return sum(len(tr.tgt_tokenizer.encode(h)) + 1 for h in hyps)

    return Engine(name, run)


def forced_lengths(path: Path, texts: list[str]) -> list[int]:
    """Our greedy output length (tokens, EOS included) of every sentence: what the random MarianMT rows decode."""
    from tasks.translation.inference import Translator

    tr = Translator.from_pretrained(path)
    res = tr.translate(texts, beam=1, return_attention=True, batch_size=BATCH)
    return [len(r.tgt_tokens) + 1 for r in res]


def _batches(texts: list[str], lengths: list[int]) -> list[tuple[list[str], int]]:
    """Length-sorted batches as our Translator forms them, each with the longest forced length in it."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [
        ([texts[i] for i in order[k : k + BATCH]], max(lengths[i] for i in order[k : k + BATCH]))
        for k in range(0, len(order), BATCH)
    ]


def ct2_forced(
    name: str, model_dir: Path, tokenizer: Any, threads: int, lengths: dict[str, int], device: str = "cpu"
) -> Engine:
    """A CTranslate2 model decoding exactly the forced length of each batch (``lengths``: sentence -> length)."""
    import ctranslate2

    tr = ctranslate2.Translator(str(model_dir), device=device, intra_threads=threads)

    def run(texts: list[str], beam: int) -> int:
        n = 0
        for batch, length in _batches(texts, [lengths[t] for t in texts]):
            tokens = [tokenizer.tokens(t) for t in batch]
            tr.translate_batch(
                tokens,
                beam_size=beam,
                max_decoding_length=length,
                min_decoding_length=length,
                return_end_token=True,
            )
            n += length * len(batch)
        return n

    return Engine(name, run)


def hf_generate(name: str, folder: Path, threads: int, lengths: dict[str, int], device: str = "cpu") -> Engine:
    from transformers import MarianMTModel, PreTrainedTokenizerFast

    torch.set_num_threads(threads)
    model = MarianMTModel.from_pretrained(folder).eval().to(device)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)

    @torch.no_grad()
    def run(texts: list[str], beam: int) -> int:
        n = 0
        for batch, length in _batches(texts, [lengths[t] for t in texts]):
            enc = tok(batch, return_tensors="pt", padding=True).to(device)
            model.generate(
                **enc,
                num_beams=beam,
                min_new_tokens=length,
                max_new_tokens=length,
                do_sample=False,
                early_stopping=False,
            )
            n += length * len(batch)
        return n

    return Engine(name, run)


# ------------------------------------------------------------------------------------------------ measures
STARTUP_CODE = {
    "library": "from tasks.translation.inference import Translator\n"
    "print(Translator.from_pretrained({path!r}).translate({one!r}, beam=5))\n",
    "cli": "from tasks.translation.cli import main\n"
    "raise SystemExit(main(['translate', '--ckpt', {path!r}, {one!r}]))\n",
    "import torch": "import torch\n",
}


def startup(path: Path, runs: int, how: str = "library") -> float:
    """Median wall time of a fresh process that loads the model and translates one sentence (beam 5): a library
    call, ``attn-translate translate`` (``cli``), or, for reference, ``import torch`` alone."""
    code = STARTUP_CODE[how].format(path=str(path), one=ONE)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup_only(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """``--startup-only``: every engine's start-up as a library call and through the CLI, and ``import torch``
    alone, alternated over ``--startup-runs`` rounds (medians, min and max)."""
    out: dict[str, Any] = {}
    for size in args.sizes:
        work = args.work / size
        work.mkdir(parents=True, exist_ok=True)
        from tasks.translation.inference import Translator

        trained = Translator.from_pretrained(args.ckpt).src_tokenizer if args.ckpt else None
        folder = Path(args.ckpt) if (args.ckpt and size == "cpu") else random_folder(size, texts, work, trained)
        paths = {k: v for k, v in exports(folder, work, size).items() if isinstance(v, Path)}
        runs: dict[str, list[float]] = {}
        load = [round(x, 2) for x in os.getloadavg()]
        for _ in range(args.startup_runs):
            runs.setdefault("import torch (reference)", []).append(startup(folder, 1, "import torch"))
            for k, pth in paths.items():
                for how in ("library", "cli"):
                    runs.setdefault(f"{k} ({how})", []).append(startup(pth, 1, how))
        out[size] = {
            "model": str(folder),
            "load_average_before": load,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "startup_s": {
                k: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)}
                for k, v in runs.items()
            },
        }
        print(json.dumps(out[size], indent=1))
    return out


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def bleu(path: Path, texts: list[str], refs: list[str]) -> float:
    from core.metrics.text import corpus_bleu
    from tasks.translation.inference import Translator

    tr = Translator.from_pretrained(path, threads=2)
    return corpus_bleu(tr.translate(texts, beam=5, batch_size=BATCH), refs)


def run_size(
    size: str, args: argparse.Namespace, texts: list[str], held_out: tuple[list[str], list[str]] | None
) -> dict[str, Any]:
    """Every row of one model size (``held_out``: test sentences and references to score, or None)."""
    work = args.work / size
    work.mkdir(parents=True, exist_ok=True)
    from tasks.translation.inference import Translator

    trained = Translator.from_pretrained(args.ckpt).src_tokenizer if args.ckpt else None
    folder = Path(args.ckpt) if (args.ckpt and size == "cpu") else random_folder(size, texts, work, trained)
    rows = exports(folder, work, size, args.device)

    tok = Translator.from_pretrained(folder).src_tokenizer
    marian = marian_folder(size, folder / "tokenizer_src.json", tok.vocab_size, work)
    ct2_marian = {q: convert_marian(marian, q) for q in ("float32", "int8")}
    lengths = dict(zip(texts, forced_lengths(folder, texts)))
    result: dict[str, Any] = {"model": str(folder), "trained": bool(args.ckpt and size == "cpu"), "rows": {}}
    result["skipped"] = {k: v for k, v in rows.items() if isinstance(v, str)}
    paths = {k: v for k, v in rows.items() if isinstance(v, Path)}

    # start-up, alternated across our engines
    starts: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.startup_runs):
        for k, p in paths.items():
            starts[k].append(startup(p, 1))
    for k, v in starts.items():
        result["rows"].setdefault(k, {})["startup_s"] = round(statistics.median(v), 3)

    dev = args.device
    if dev != "cpu":  # ONNX Runtime runs here on the CPU only (onnxruntime, not onnxruntime-gpu)
        for k in [k for k in paths if "ORT" in k]:
            result["skipped"][k] = f"not run on {dev}: the onnxruntime package runs on the CPU"
            del paths[k]
    for threads in args.threads:
        engines = [ours(k, p, threads, dev) for k, p in paths.items()]
        ct2_ours = rows.get("ours CT2 fp32")
        if isinstance(ct2_ours, Path):
            engines.append(ct2_forced("ours CT2 fp32 (forced)", ct2_ours / "ctranslate2", tok, threads, lengths))
        for q, d in ct2_marian.items():
            engines.append(
                ct2_forced(f"MarianMT CT2 {'fp32' if q == 'float32' else q} (forced)", d, tok, threads, lengths)
            )
        engines.append(hf_generate("MarianMT HF generate (forced)", marian, threads, lengths))
        torch.set_num_threads(threads)
        for beam in (1, 5):
            times: dict[str, list[float]] = {e.name: [] for e in engines}
            tokens: dict[str, int] = {}
            for r in range(args.rounds):
                for e in engines if r % 2 == 0 else engines[::-1]:
                    s, n = timed(lambda e=e: e.run(texts, beam))
                    times[e.name].append(s)
                    tokens[e.name] = n
            for e in engines:
                med = statistics.median(times[e.name])
                row = result["rows"].setdefault(e.name, {})
                row[f"t{threads}_beam{beam}_sent_per_s"] = round(len(texts) / med, 2)
                row[f"t{threads}_beam{beam}_tok_per_s"] = round(tokens[e.name] / med, 1)
        # batch-1 latency (beam 5), our engines
        for e in engines[: len(paths)]:
            lat = [timed(lambda t=t, e=e: e.run([t], 5))[0] for t in texts[: args.latency_sentences]]
            result["rows"][e.name][f"t{threads}_latency_ms"] = round(1000 * statistics.median(lat), 1)
        result[f"load_average_t{threads}"] = [round(x, 2) for x in os.getloadavg()]
    if held_out is not None and result["trained"]:
        for k, p in paths.items():
            result["rows"][k]["bleu_beam5"] = round(bleu(p, *held_out), 2)
    return result


def demo_quality(folder: Path, work: Path, rounds: int) -> dict[str, Any]:
    """The demo's translation model (an RNN with additive attention: ONNX Runtime, not CTranslate2) on the demo's
    held-out pairs: BLEU (beam 5, as the demo scores) and decode seconds of eager, ORT fp32 and ORT int8."""
    from core.metrics.text import corpus_bleu
    from tasks.translation.data import TranslationDataModule
    from tasks.translation.demo import DEMO_BEAM, DEMO_DATA, HELD_OUT
    from tasks.translation.export import export_onnx
    from tasks.translation.inference import Translator

    dm = TranslationDataModule(**{**DEMO_DATA, "cache_dir": str(work / "demo_cache")})
    dm.prepare_data()
    pairs = dm.load_splits()["test"][:HELD_OUT]
    texts, refs = [s for s, _ in pairs], [r for _, r in pairs]
    paths = {"ours PyTorch": folder}
    for q in ("float32", "int8"):
        paths[f"ours ORT {'fp32' if q == 'float32' else q}"] = export_onnx(
            str(folder), str(work / f"demo_onnx_{q}"), q, True
        )
    torch.set_num_threads(1)
    translators = {k: Translator.from_pretrained(p, threads=1) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in translators}
    out: dict[str, Any] = {"held_out": len(pairs), "rows": {}}
    for r in range(rounds):
        for k, tr in translators.items() if r % 2 == 0 else list(translators.items())[::-1]:
            start = time.perf_counter()
            hyps = tr.translate(texts, beam=DEMO_BEAM, batch_size=BATCH)
            times[k].append(time.perf_counter() - start)
            out["rows"][k] = {"bleu": round(corpus_bleu(hyps, refs), 2)}
    for k, v in times.items():
        out["rows"][k]["seconds"] = round(statistics.median(v), 3)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def table(results: dict[str, Any], threads: list[int]) -> str:
    lines = []
    for size, res in results["sizes"].items():
        cols = ["startup_s"] + [
            f"t{t}_{m}"
            for t in threads
            for m in ("latency_ms", "beam1_sent_per_s", "beam5_sent_per_s", "beam5_tok_per_s")
        ]
        if any("bleu_beam5" in r for r in res["rows"].values()):
            cols.append("bleu_beam5")
        lines.append(f"\n**{size}** ({'trained: ' if res['trained'] else 'random weights: '}{res['model']})\n")
        lines.append("| engine | " + " | ".join(cols) + " |")
        lines.append("| --- |" + " --- |" * len(cols))
        for name, row in res["rows"].items():
            lines.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
        for name, why in res["skipped"].items():
            lines.append(f"\n{name}: {why}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=None, help="a trained CPU-recipe model (folder or .ckpt) for the 'cpu' size")
    p.add_argument("--data-config", default="configs/translation/tatoeba_cpu.yaml")
    p.add_argument("--sizes", nargs="*", default=["cpu", "base"], choices=list(SIZES))
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--device", default="cpu", help="cpu or cuda (ours in PyTorch and on CTranslate2, HF generate)")
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--latency-sentences", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--startup-runs", type=int, default=5)
    p.add_argument("--startup-only", action="store_true", help="only the start-up rows (library and CLI)")
    p.add_argument("--quality", action="store_true", help="BLEU of each engine on the test split (trained --ckpt)")
    p.add_argument("--quality-sentences", type=int, default=2000)
    p.add_argument("--demo", type=Path, default=None, help="also the demo's translation model folder on ONNX Runtime")
    p.add_argument("--work", type=Path, default=ROOT / ".peer" / "engines")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "inference_engines.json")
    args = p.parse_args()
    import ctranslate2
    import onnxruntime
    import transformers

    texts: list[str] = []
    refs: list[str] | None = None
    if args.sizes:
        texts, refs = sentences(args.data_config, max(args.sentences, args.quality_sentences if args.quality else 0))
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "ctranslate2": ctranslate2.__version__,
            "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "sizes": {},
    }
    if args.startup_only:
        results["startup"] = startup_only(args, texts[: args.sentences])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
        return 0
    if args.demo is not None:
        results["demo"] = demo_quality(args.demo, args.work, args.rounds)
        print(json.dumps(results["demo"], indent=1))
    for size in args.sizes:
        held_out = None
        if args.quality and size == "cpu" and refs is not None:
            held_out = (texts[: args.quality_sentences], refs[: args.quality_sentences])
        results["sizes"][size] = run_size(size, args, texts[: args.sentences], held_out)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(table(results, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
