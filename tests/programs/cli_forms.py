"""Objects for `snailjob run MODULE:OBJECT` (tests/test_cli.py): each form holds other executors."""

import snailjob as sj


@sj.job("formClient")
def for_client(args: sj.JobArgs) -> str:
    return "client"


@sj.job("formManager")
def for_manager(args: sj.JobArgs) -> str:
    return "manager"


@sj.job("formRegistry")
def for_registry(args: sj.JobArgs) -> str:
    return "registry"


@sj.job("formList1")
def first(args: sj.JobArgs) -> str:
    return "one"


@sj.job("formList2")
def second(args: sj.JobArgs) -> str:
    return "two"


client = sj.Client(executors=[for_client])  # settings from the environment, read here
sj.ExecutorManager.register(for_manager)
REGISTRY = sj.ExecutorRegistry()
REGISTRY.register(for_registry)
EXECUTORS = [first, second]
