"""What verify and diff compare of a cell: text outputs rounded to the tolerance with addresses, ids and
folders masked, stderr left out; images by hash; cells numbered as in the notebook the user wrote."""

from __future__ import annotations

import nbformat

from jobrunner.execution.cell_outputs import cell_outputs, changed_cells, changed_images, significant_digits


def _executed(printed: str, png: str, *, stderr: str = "") -> nbformat.NotebookNode:
    v4 = nbformat.v4
    nb = v4.new_notebook()
    injected = v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]})
    code = v4.new_code_cell("print(result)\nplot()")
    code.outputs = [
        v4.new_output("stream", name="stdout", text=printed),
        v4.new_output("stream", name="stderr", text=stderr),
        v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure size 640x480>"}),
    ]
    nb.cells = [
        v4.new_markdown_cell("# title"),
        v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        injected,
        code,
    ]
    return nb


def test_numbers_within_the_tolerance_and_masked_ids_compare_equal() -> None:
    assert significant_digits(1e-6) == 6 and significant_digits(1e-3) == 3 and significant_digits(0) == 15
    a = cell_outputs(
        _executed(
            "acc 0.9649122807017544 <obj at 0x7f3a9c2b1d90> m-" + "a" * 32 + " /tmp/run1/out\n",
            "iVBORw0K",
            stderr="warning: /home/a",
        ),
        folders=[("/tmp/run1", "<outputs>")],
    )
    b = cell_outputs(
        _executed(
            "acc 0.9649122807017545 <obj at 0x7f00deadbeef> m-" + "b" * 32 + " /tmp/run2/out\n",
            "iVBORw0K",
            stderr="warning: /home/b",
        ),
        folders=[("/tmp/run2", "<outputs>")],
    )
    assert [c.index for c in a] == [1, 2]  # markdown counts, the injected parameters cell does not
    assert a[1].text == "acc 0.964912 <obj at 0x?> m-? <outputs>/out\n<Figure size 640x480>"
    assert changed_cells(a, b) == [] and changed_images(a, b) == []


def test_a_changed_number_and_a_changed_image_are_named_by_cell() -> None:
    a = cell_outputs(_executed("value 0.31\n", "iVBORw0KAAAA"))
    b = cell_outputs(_executed("value 0.87\n", "iVBORw0KBBBB"))
    [text] = changed_cells(a, b)
    assert text["cell"] == "cell 2 (`print(result)`)" and (text["a"], text["b"]) == (
        "value 0.31\n<Figure size 640x480>",
        "value 0.87\n<Figure size 640x480>",
    )
    [image] = changed_images(a, b)
    assert image["index"] == 2 and image["a"] != image["b"] and image["a"][0].startswith("image/png sha256:")
    # a looser tolerance keeps fewer digits: 0.3101 and 0.3102 agree at 1e-3, not at 1e-6
    loose = [cell_outputs(_executed(f"value {v}\n", "x"), rtol=1e-3) for v in ("0.3101", "0.3102")]
    assert changed_cells(*loose) == []
    strict = [cell_outputs(_executed(f"value {v}\n", "x")) for v in ("0.3101", "0.3102")]
    assert len(changed_cells(*strict)) == 1
