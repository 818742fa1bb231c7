"""Kernel acquisition: the one place that starts, signals and stops notebook kernels.

Each execution gets a fresh kernel that is used for that one job and then shut down immediately
(graceful shutdown stalled for seconds in measurements; a reused kernel would leak the previous job's
variables). A warm pool of pre-started kernels will plug in behind `acquire_kernel`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

from jobrunner.errors import KernelStartError

log = logging.getLogger(__name__)


@dataclass
class KernelHandle:
    """A started kernel owned by one execution."""

    manager: AsyncKernelManager
    pgid: int | None

    def signal(self, signum: int) -> bool:
        """Send a signal to the kernel's process group (its own session); False if already gone.

        Safe to call from any thread: it uses only the operating system, not the kernel's event loop.
        """
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, signum)
            return True
        except ProcessLookupError:
            return False

    def interrupt(self) -> bool:
        return self.signal(signal.SIGINT)

    def kill(self) -> bool:
        return self.signal(signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop the kernel at once and release its ports and connection file."""
        try:
            if run_sync(self.manager.is_alive)():
                run_sync(self.manager.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - a kernel that is already gone is fine here
            log.debug("kernel shutdown raised", exc_info=True)
            self.kill()
        finally:
            try:
                run_sync(self.manager.cleanup_resources)()
            except Exception:  # noqa: BLE001
                log.debug("kernel cleanup raised", exc_info=True)


def acquire_kernel(kernel_name: str, *, env: Mapping[str, str], cwd: Path) -> KernelHandle:
    """Start a fresh kernel for one execution, with `env` as its environment and `cwd` as its folder."""
    manager = AsyncKernelManager(kernel_name=kernel_name)
    # ipykernel warns on every start that local TCP is unencrypted; keep its log to errors so that
    # `dvc repro` and job logs show the notebook's progress, not that banner.
    extra = ["--IPKernelApp.log_level=ERROR"] if manager.ipykernel else []
    try:
        run_sync(manager.start_kernel)(env=dict(env), cwd=str(cwd), extra_arguments=extra)
    except Exception as exc:
        raise KernelStartError(f"kernel '{kernel_name}' failed to start: {exc}") from exc
    provisioner = manager.provisioner
    pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
    return KernelHandle(manager, pgid)
