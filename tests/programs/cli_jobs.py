"""Executors of every kind, for the `snailjob` command's tests (tests/test_cli.py)."""

from typing import List

from pydantic import BaseModel

import snailjob as sj


class Invoice(BaseModel):
    customer: str
    amounts: List[int]


@sj.job("cliEcho")
def echo(args: sj.JobArgs) -> dict:
    sj.SnailLog.REMOTE.info("echo says %s", args.job_params)
    return {"echo": args.job_params}


@sj.job("cliBilling")
def billing(args: sj.JobArgs[Invoice]) -> int:
    return sum(args.job_params.amounts)


@sj.job("cliAsync")
async def fetch(args: sj.JobArgs) -> str:
    return "fetched"


@sj.job("cliShard")
def shard(args: sj.ShardingJobArgs) -> str:
    return f"{args.sharding_index}/{args.sharding_total}:{args.job_params}"


@sj.job("cliBroken")
def broken(args: sj.JobArgs) -> None:
    raise ValueError("the ledger is closed")


pages = sj.MapExecutor("cliPages")


@pages.map()
def split(args: sj.MapArgs):
    return sj.mr_do_map([1, 2, 3], "PAGE")


@pages.map("PAGE", item=int)
def page(args: sj.MapArgs) -> int:
    return args.map_result * 10


total = sj.MapReduceExecutor("cliSum")


@total.map()
def root(args: sj.MapArgs):
    return sj.mr_do_map(list(range(1, 5)), "DOUBLE")


@total.map("DOUBLE")
def double(args: sj.MapArgs) -> int:
    return int(args.map_result) * 2


@total.reduce(item=int)
def add(args: sj.ReduceArgs) -> int:
    return sum(args.map_result)


@total.merge(item=int)
def merge(args: sj.MergeReduceArgs) -> int:
    return sum(args.reduces)


@sj.retryable("cliScene", local_times=0)
def charge(order_id: int, amount: float) -> str:
    return f"charged {order_id}"
