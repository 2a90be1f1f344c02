"""Process entry point of the ``mailca`` console script and ``python -m mailca``.

It exists so that two start-up settings apply before click and cryptography are imported
(a ``mailca issue`` spends most of its ~80 ms importing them):

* the cyclic garbage collector's generation-0 threshold is raised from 700 to 100,000
  allocations: importing ~400 modules otherwise triggers hundreds of collections that find
  nothing (~3.5 ms).  Collection still happens, so long runs (``issue --batch``, ``check``)
  do not accumulate cycles;
* :func:`mailca.cli.run` leaves without interpreter teardown (see there).

Library users import ``mailca.cli`` / ``mailca.issuance.ca`` directly and get neither.
"""

import gc


def run() -> None:
    gc.set_threshold(100_000, 50, 100)
    from .cli import run as cli_run

    cli_run()
