"""Property test: every hyper-parameter and metadata field of a real tiny checkpoint, mutated (wrong type,
negative, zero, huge, NaN, a nested ``class_path``), gives a clear error or a model that runs and exports — in a
subprocess whose address space is capped, so a tampered size cannot make the program allocate gigabytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, math, resource, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.filterwarnings("ignore")
import torch
from tiny_models import BUILDERS, run_once, save_checkpoint
from core.errors import UserError

task, folder = sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
model = BUILDERS[task]()
path = save_checkpoint(model, __import__("pathlib").Path(folder) / "base.ckpt")
cls = type(model)
base = torch.load(path, weights_only=True)
run_once(task, cls.load_from_checkpoint(path))  # warm-up: everything imported before the cap

# Cap the address space at what is mapped now plus 1.5 GB: a tampered size that slipped through
# would hit MemoryError instead of swapping the test machine.
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 29), vm + (3 << 29)))

GADGET = {"class_path": "os.system", "init_args": {"command": "touch " + folder + "/PWNED"}}

def mutations(value):
    yield "wrong type", ("x" if not isinstance(value, str) else 7)
    for name, v in (("negative", -1), ("zero", 0), ("huge", 10**9), ("nan", float("nan"))):
        yield name, v
    yield "class_path", GADGET
    yield "nested class_path", {"a": [GADGET]}

def fields(ckpt):
    for k, v in ckpt["hyper_parameters"].items():
        yield ("hyper_parameters", k), v
    for k, v in ckpt["attn_suite"].items():
        yield ("attn_suite", k), v
        if isinstance(v, dict):
            for k2, v2 in v.items():
                yield ("attn_suite", k, k2), v2

results = []
for where, value in list(fields(base)):
    for kind, new in mutations(value):
        ckpt = torch.load(path, weights_only=True)
        target = ckpt
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = new
        torch.save(ckpt, folder + "/m.ckpt")
        try:
            loaded = cls.load_from_checkpoint(folder + "/m.ckpt")
            run_once(task, loaded)
            loaded.save_pretrained(folder + "/exported")  # and exporting it never trips over its metadata
            outcome = "ok"
        except UserError as err:
            outcome = "error: " + str(err).splitlines()[0][:200]
        except BaseException as err:  # noqa: BLE001 - anything else is what this test looks for
            outcome = "CRASH: " + type(err).__name__ + ": " + str(err)[:300]
        results.append([".".join(where), kind, outcome])
print(json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.parametrize("task", ["translation", "captioning", "speech"])
def test_every_mutated_field_gives_a_clear_error_or_a_working_model(task: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TESTS), task, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path), "ATTN_SUITE_CACHE": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    crashes = [r for r in results if r[2].startswith("CRASH")]
    assert not crashes, crashes[:10]
    assert not (tmp_path / "PWNED").exists()
    # the mutations were really applied: most are refused, and every error names the checkpoint
    errors = [r for r in results if r[2].startswith("error")]
    assert len(results) > 50 and len(errors) > len(results) // 2
    assert all("m.ckpt" in r[2] for r in errors), [r for r in errors if "m.ckpt" not in r[2]][:5]
