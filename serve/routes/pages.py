"""Pages a browser opens: the executed notebook of an MLflow run, by API key or by a signed link.

The job's executed notebook (GET /v1/jobs/{job_id}/notebook) follows the same rules in routes/jobs.py.
Both answer `NotebookHTML`: untrusted content, sandboxed into an opaque origin (serve/links.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool

from serve.deps import ReadOrLinkDep, ServicesDep
from serve.errors import NotFound
from serve.links import NotebookHTML
from serve.schemas import RUN_ID_PATTERN

router = APIRouter(prefix="/v1", tags=["model"])


@router.get(
    "/runs/{run_id}/notebook",
    response_class=NotebookHTML,
    responses={200: {"content": {"text/html": {}}}, 404: {"description": "No such run or no notebook"}},
)
async def run_notebook(
    services: ServicesDep, _: ReadOrLinkDep, run_id: str = Path(pattern=RUN_ID_PATTERN)
) -> NotebookHTML:
    """The executed notebook of an MLflow run, rendered as HTML (sandboxed). Opens with a read key or
    with the signed link that lineage answers carry (`notebook.html_url`)."""
    try:
        html = await run_in_threadpool(services.lineage.notebook_html, run_id)
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            raise NotFound(f"MLflow run {run_id} not found") from exc
        raise
    if html is None:
        raise NotFound(f"MLflow run {run_id} has no executed notebook (artifact notebook/*.html)")
    return NotebookHTML(html)
