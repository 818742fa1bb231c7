"""What each code cell of an executed notebook showed, in a form two executions can be compared by.

`jobrunner verify` compares a fingerprint of each cell's text outputs; `jobrunner diff` (and the REST diff)
shows text outputs cell by cell and compares images by hash. The text of a cell is its stdout, the
`text/plain` of its results and displays, and its errors (`ename: evalue`, no traceback); stderr is left
out (warnings and progress bars are not results, and name the machine's folders). Before comparing:

- floating-point numbers are rounded to the significant digits the tolerance allows (rtol 1e-6: 6 digits),
  so `0.9649122807017544` and `0.9649122807017545` agree;
- object addresses (`at 0x7f3a...`) become `0x?`, MLflow logged-model ids (`m-<32 hex>`) `m-?` and UUIDs
  `<uuid>`: each execution draws new ones;
- the folders an execution ran in (the project, the outputs folder) become `<project>` / `<outputs>`,
  so a model saved "to /tmp/jobrunner-verify-x/.outputs/model" matches one saved to the job's folder,
  and the execution's own MLflow run id becomes `<run>`.

Cells are numbered as in the notebook the user wrote: papermill's injected parameters cell is left out.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

INJECTED_TAG = "injected-parameters"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
_FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_MODEL_ID = re.compile(r"\bm-[0-9a-f]{32}\b")  # an MLflow logged model, new on every execution
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


@dataclass
class CellOutputs:
    index: int  # position in the notebook, the injected parameters cell left out
    source: str
    text: str  # normalised text outputs (see the module docstring)
    images: list[str] = field(default_factory=list)  # "<mime> sha256:<hex>" per image, in order

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def title(self) -> str:
        """`cell 3 (first line of its source)`: how reports name the cell."""
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        return f"cell {self.index}" + (f" (`{first[:60]}`)" if first else "")


def significant_digits(rtol: float) -> int:
    """How many significant digits a relative tolerance keeps: 1e-6 -> 6, 0 -> 15."""
    if rtol <= 0:
        return 15
    return max(1, min(15, math.ceil(-math.log10(rtol))))


def normalise(text: str, *, digits: int, folders: Iterable[tuple[str, str]] = ()) -> str:
    for folder, name in sorted(folders, key=lambda f: len(f[0]), reverse=True):
        if folder:
            text = text.replace(folder, name)
    text = _ADDRESS.sub("0x?", text)
    text = _UUID.sub("<uuid>", _MODEL_ID.sub("m-?", text))

    def rounded(m: re.Match[str]) -> str:
        try:
            value = float(m.group(0))
        except ValueError:
            return m.group(0)
        return f"{value:.{digits}g}" if math.isfinite(value) else m.group(0)

    return _FLOAT.sub(rounded, text)


def _text_of(output: Any) -> str | None:
    kind = output.get("output_type")
    if kind == "stream":
        return None if output.get("name") == "stderr" else str(output.get("text", ""))
    if kind in ("execute_result", "display_data"):
        plain = (output.get("data") or {}).get("text/plain")
        if plain is None:
            return None
        return "".join(plain) if isinstance(plain, list) else str(plain)
    if kind == "error":
        return f"{output.get('ename', '')}: {output.get('evalue', '')}\n"
    return None


def _images_of(output: Any) -> list[str]:
    data = output.get("data") or {}
    found = []
    for mime in IMAGE_TYPES:
        if mime in data:
            value = data[mime]
            raw = "".join(value) if isinstance(value, list) else str(value)
            found.append(f"{mime} sha256:{hashlib.sha256(raw.strip().encode()).hexdigest()[:16]}")
    return found


def cell_outputs(
    nb: Any, *, rtol: float = 1e-6, folders: Iterable[tuple[str, str]] = ()
) -> list[CellOutputs]:
    """The code cells of an executed notebook with their normalised text outputs and image hashes."""
    digits = significant_digits(rtol)
    folders = list(folders)
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    out = []
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        texts = [t for t in (_text_of(o) for o in cell.get("outputs", [])) if t]
        images = [i for o in cell.get("outputs", []) for i in _images_of(o)]
        out.append(
            CellOutputs(
                index=index,
                source=cell.source,
                text=normalise("".join(texts), digits=digits, folders=folders),
                images=images,
            )
        )
    return out


def changed_cells(a: list[CellOutputs], b: list[CellOutputs]) -> list[dict[str, Any]]:
    """Cells whose text outputs differ, pairing cells by position: index, title, fingerprints, both texts
    (clipped). A cell that only one side has counts as differing."""
    by_index_b = {c.index: c for c in b}
    changes = []
    for cell in a:
        other = by_index_b.pop(cell.index, None)
        if other is None or other.fingerprint != cell.fingerprint:
            changes.append(_change(cell, other))
    for other in by_index_b.values():
        changes.append(_change(None, other))
    return sorted(changes, key=lambda c: c["index"])


def _change(a: CellOutputs | None, b: CellOutputs | None) -> dict[str, Any]:
    ref = a or b
    if ref is None:
        raise ValueError("a changed cell is in at least one of the two notebooks")
    return {
        "index": ref.index,
        "cell": ref.title,
        "a": _clip(a.text) if a else None,
        "b": _clip(b.text) if b else None,
        "fingerprint_a": a.fingerprint if a else None,
        "fingerprint_b": b.fingerprint if b else None,
    }


def changed_images(a: list[CellOutputs], b: list[CellOutputs]) -> list[dict[str, Any]]:
    """Cells whose images differ by hash (or in number)."""
    by_index_b = {c.index: c for c in b}
    changes = []
    for index in sorted({c.index for c in a} | set(by_index_b)):
        ca = next((c for c in a if c.index == index), None)
        cb = by_index_b.get(index)
        ia, ib = (ca.images if ca else []), (cb.images if cb else [])
        if ia != ib:
            ref = ca if ca is not None else by_index_b[index]  # the index is from a or from b
            changes.append({"index": index, "cell": ref.title, "a": ia, "b": ib})
    return changes


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text)} characters]"


def fingerprints(cells: list[CellOutputs]) -> dict[str, str]:
    return {str(c.index): c.fingerprint for c in cells}
