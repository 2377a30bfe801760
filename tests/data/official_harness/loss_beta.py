"""Official ``train_epoch`` loss parts at β ≠ 1 on the golden loss inputs.

Usage: OFFICIAL_DIR GOLDEN_NPZ OUT_JSON [BETAS, default 0.5,2]. train.py starts NCCL at import, so
only its ``train_epoch`` function is compiled (ast) and run, with stand-ins for the model,
teachers, data loader and optimiser that return the stored matrices; the loss parts are the
arguments of its logger call (Loss, GTLoss, DistillLoss, FineLoss), in float64.
"""

from __future__ import annotations

import ast
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

OFFICIAL = Path(sys.argv[1])
sys.path.insert(0, str(OFFICIAL))
for _name in ("boto3", "botocore", "botocore.exceptions", "requests"):  # download helpers only
    sys.modules.setdefault(_name, types.ModuleType(_name))
sys.modules["botocore.exceptions"].ClientError = Exception  # type: ignore[attr-defined]
from modules.until_module import CrossEn  # noqa: E402

tree = ast.parse((OFFICIAL / "train.py").read_text())
fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train_epoch")
CODE = compile(ast.Module(body=[fn], type_ignores=[]), "train.py", "exec")
golden = np.load(sys.argv[2])
S = torch.tensor(golden["loss_student_sim"], dtype=torch.float64)
W = torch.tensor(golden["loss_student_weights"], dtype=torch.float64)
T = [torch.tensor(golden[f"loss_teacher{i}_sim"], dtype=torch.float64) for i in (1, 2)]
R = [torch.tensor(golden[f"loss_teacher{i}_rel"], dtype=torch.float64) for i in (1, 2)]


class Log:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def info(self, fmt: str, *args: object) -> None:
        self.calls.append(args)


class Student(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.clip = torch.nn.Module()
        self.clip.logit_scale = torch.nn.Parameter(torch.tensor(1.0))
        self.s = torch.nn.Parameter(S.clone())
        self.w = torch.nn.Parameter(W.clone())

    def forward(self, *args: object, return_fine: bool = False) -> tuple:
        return self.s, self.w


class Teacher:
    def __init__(self, t: torch.Tensor, r: torch.Tensor) -> None:
        self.t, self.r = t, r

    def __call__(self, *args: object, return_fine: bool = False) -> tuple:
        return self.t.clone(), self.r.clone()


class Optimiser:
    def get_lr(self) -> list[float]:
        return [0.0]

    def step(self) -> None:
        pass

    def zero_grad(self) -> None:
        pass


def run(coarse: str, fine: str, n_teachers: int, beta: float) -> dict[str, float]:
    log = Log()
    ns = {"torch": torch, "np": np, "F": F, "CrossEn": CrossEn, "time": time, "logger": log}
    exec(CODE, ns)  # noqa: S102 - the official function, compiled from its source
    args = types.SimpleNamespace(n_display=1, distill_method=coarse, fine_method=fine, beta=beta,
                                 gradient_accumulation_steps=1, epochs=1,
                                 teacher1_name="XCLIP", teacher2_name="TS2Net")
    batch = [torch.zeros(1) for _ in range(5)]
    teachers = [Teacher(T[i], R[i]) for i in range(n_teachers)]
    total, _ = ns["train_epoch"](0, args, Student(), teachers, [batch], "cpu", 1, Optimiser(),
                                 None, 0)
    ((loss, gt, coarse_v, fine_v),) = [c[5:9] for c in log.calls]
    assert abs(loss - total) < 1e-12
    return {"gt": gt, "coarse": coarse_v, "fine": fine_v, "total": loss}


values = {}
for beta in [float(b) for b in (sys.argv[4] if len(sys.argv) > 4 else "0.5,2").split(",")]:
    for coarse in ("pear", "ce", "l1"):
        for fine in ("ce", "pear", "l1"):
            for n_teachers, tag in ((1, "t1"), (2, "t2")):
                for part, v in run(coarse, fine, n_teachers, beta).items():
                    values[f"beta{beta:g}_{coarse}_{fine}_{tag}_{part}"] = v
out = {"source": {"repo": "ruc-aimc-lab/TeachCLIP", "path": "train.py", "function": "train_epoch",
                  "commit": "23c991fd7e4fe7bdbd7eb431f78e8e1340fdc736"},
       "how": ("The official train_epoch source was compiled on its own (train.py starts NCCL at "
               "import) and run once per setting in float64 with stand-ins that return the loss "
               "inputs of official_golden.npz (loss_student_sim, loss_student_weights, "
               "loss_teacher{1,2}_sim, loss_teacher{1,2}_rel) as the student's and teachers' "
               "outputs; the parts are the values passed to its logger (Loss, GTLoss, "
               "DistillLoss, FineLoss). The same harness at beta=1 reproduces the loss_* arrays "
               "of official_golden.npz exactly."),
       "keys": "beta{beta}_{coarse}_{fine}_{t1|t2}_{gt|coarse|fine|total}",
       "values": values}
Path(sys.argv[3]).write_text(json.dumps(out, indent=1, sort_keys=True), encoding="utf-8")
