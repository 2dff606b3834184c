"""A client program for the durable-outbox test: one job that works for 1 s."""

import time

import snailjob as sj


@sj.job("outboxJob")
def outbox_job(args: sj.JobArgs) -> str:
    for _ in range(100):
        time.sleep(0.01)
    return f"survived {args.job_params}"


if __name__ == "__main__":
    sj.ExecutorManager.register(outbox_job)
    sj.client_main()
