"""`python -m datapolis_ingest api|migrate|worker`."""

from __future__ import annotations

import gc
import sys

from datapolis_ingest.app import create_app
from datapolis_ingest.settings import IngestSettings
from datapolis_ingest.worker import run_worker
from datapolis_shared.cli import ServiceCommands
from datapolis_shared.cli import main as cli_main

COMMANDS = ServiceCommands(
    package="datapolis_ingest",
    load_settings=IngestSettings,
    create_app=create_app,
    run_worker=run_worker,
)


# Collect the youngest generation after this many net allocations, not 700.
# Each HTTP batch allocates a few hundred containers (parsed records, header
# lists) that live until Kafka acknowledges them; at the default threshold
# they were collected several times while in flight, promoted, and made the
# full collections that followed cost up to 100+ ms each (a p99 spike, and
# about a tenth of the process's CPU under the benchmark's load).
GC_YOUNG_THRESHOLD = 20_000


def main() -> None:
    # Modules, settings and the like live as long as the process: frozen, no
    # collection walks them again.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    sys.exit(cli_main(COMMANDS))


if __name__ == "__main__":
    main()
