"""Run the example executors as a SnailJob client: ``python main.py``.

Settings come from the environment or a ``.env`` file (see ../.env.example
and ../CONFIGURATION.md).  Stop with Ctrl-C or SIGTERM: running jobs get
SNAIL_SHUTDOWN_GRACE seconds to finish.
"""

from jobs import ALL

import snailjob as sj

if __name__ == "__main__":
    for executor in ALL:
        sj.ExecutorManager.register(executor)
    sj.client_main()
