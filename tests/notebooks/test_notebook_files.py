"""The pipeline notebooks are committed as JupyterLab saves them for the project's kernel.

Opening one in JupyterLab must not mark it modified: the kernelspec is the project's kernel (`python3`,
as its kernel.json names it), `language_info` is exactly what that kernel reports when it starts (Lab
writes the kernel's answer into the notebook), the format is nbformat 4.5 with cell ids, the bytes are
what nbformat (the Jupyter server's writer) produces, and there are no outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from jobrunner.config import Settings

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def kernel_language_info() -> dict:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name=Settings().kernel_name, cwd=str(ROOT))
    try:
        client.kernel_info()
        reply = client.get_shell_msg(timeout=30)
        return reply["content"]["language_info"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_four_pipeline_notebooks_are_checked() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["01_ingest", "02_prepare", "03_train", "04_evaluate"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_metadata_matches_the_projects_kernel(path: Path, kernel_language_info: dict) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    name = Settings().kernel_name
    spec = KernelSpecManager().get_kernel_spec(name)
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert dict(nb.metadata.kernelspec) == {
        "display_name": spec.display_name,
        "language": spec.language,
        "name": name,
    }
    assert dict(nb.metadata.language_info) == kernel_language_info
    assert set(nb.metadata) == {"kernelspec", "language_info"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_as_jupyter_writes_it_without_outputs(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    nbformat.validate(nb)
    ids = [cell.id for cell in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: commit without outputs"
    assert nbformat.writes(nb) + "\n" == text  # byte-identical to what the Jupyter server saves
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
