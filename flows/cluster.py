"""Where the analysis computes: dask's threaded scheduler here, or an existing dask cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask

from changedetect.config import DaskConfig
from changedetect.errors import ChangeDetectError

#: Environment variable naming a dask scheduler; it overrides ``dask.scheduler_address``.
SCHEDULER_ENV = "CHANGEDETECT_DASK_SCHEDULER"


class DaskClusterError(ChangeDetectError):
    """The configured dask scheduler cannot be reached."""


def scheduler_address(config: DaskConfig) -> str | None:
    """The scheduler the analysis runs on: $CHANGEDETECT_DASK_SCHEDULER, else the config's;
    None for the local threaded scheduler."""
    return os.environ.get(SCHEDULER_ENV, "").strip() or config.scheduler_address


@contextmanager
def dask_scheduler(config: DaskConfig) -> Iterator[str]:
    """Run the dask computations inside the block on the configured scheduler; yields its name.

    Without an address this is dask's threaded scheduler, set explicitly so that a distributed
    client created elsewhere in the process is not picked up. With one, a ``distributed.Client``
    is connected for the block only and made current for this thread; the arrays stay on the
    cluster and only the (small) gathered results come back.
    """
    address = scheduler_address(config)
    if address is None:
        with dask.config.set(scheduler="threads"):
            yield "threads"
        return
    from distributed import Client

    try:
        client = Client(address, timeout=config.connect_timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise DaskClusterError(
            f"cannot reach the dask scheduler at {address} within {config.connect_timeout_s:g} s "
            f"({exc}); start it, or fix dask.scheduler_address / ${SCHEDULER_ENV}"
        ) from None
    with client, client.as_current():
        yield address
