"""A client program for the load test: a trivial sharding job."""

import snailjob as sj


@sj.job("load")
def load(args: sj.ShardingJobArgs) -> object:
    return args.sharding_index


if __name__ == "__main__":
    sj.ExecutorManager.register(load)
    sj.client_main()
