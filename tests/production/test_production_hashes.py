"""The hashes recorded in MLflow runs are DVC's own: a folder's hash equals what `dvc add` computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prodkit import BIN, base_env, run

from jobrunner.execution.hashing import dvc_managed_paths, hash_path

pytestmark = [pytest.mark.production]


def test_folder_hash_is_dvcs_dir_hash(tmp_path: Path) -> None:
    if not (BIN / "dvc").exists():
        pytest.skip("dvc is not installed")
    model = tmp_path / "model"
    (model / "sub dir").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "model.pkl").write_bytes(bytes(range(256)) * 100)
    (model / "sub dir" / "é.txt").write_text("unicode name\n")
    (model / "sub dir" / "empty").write_bytes(b"")
    (model / "a-b").write_text("sorts between 'a' and 'a/'\n")
    (model / "a").mkdir()
    (model / "a" / "x").write_text("nested\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    run([str(BIN / "dvc"), "add", "-q", "model"], cwd=tmp_path, env=base_env())
    (out,) = yaml.safe_load((tmp_path / "model.dvc").read_text())["outs"]
    recorded = hash_path(Path("model"), tmp_path)
    assert recorded.md5 == out["md5"]
    assert recorded.size == out["size"]


def test_dvc_managed_paths_lists_lock_and_declared_outputs(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "train": {
                        "cmd": "x",
                        "outs": ["models/model", {"reports/a.ipynb": {"cache": True}}],
                        "metrics": [{"metrics/train.json": {"cache": False}}],
                        "plots": ["plots/roc.csv"],
                    }
                }
            }
        )
    )
    assert dvc_managed_paths(tmp_path) == [
        "dvc.lock",
        "models/model",
        "reports/a.ipynb",
        "metrics/train.json",
        "plots/roc.csv",
    ]
