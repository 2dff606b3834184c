import pytest

import snailjob as sj
from snailjob.executors import ExecutorRegistry, UnknownTask


def test_job_decorator_keeps_the_function():
    def plain(args):
        return args

    decorated = sj.job("plainJob")(plain)
    assert decorated is plain and plain.executor_name == "plainJob"
    assert decorated(5) == 5


def test_registry_resolves_each_task_type():
    mr = sj.MapReduceExecutor("mr")

    @mr.map()
    def root(args): ...

    @mr.map("NEXT")
    def nxt(args): ...

    @mr.reduce()
    def red(args): ...

    @mr.merge()
    def mer(args): ...

    @sj.job("plain")
    def plain(args): ...

    reg = ExecutorRegistry()
    reg.register(mr)
    reg.register(plain)
    spec = reg.get("mr")
    assert spec.resolve(5, 1, "ROOT_MAP") is root
    assert spec.resolve(5, 1, "NEXT") is nxt
    assert spec.resolve(4, 1, "NEXT") is nxt
    assert spec.resolve(5, 2, "REDUCE_TASK") is red
    assert spec.resolve(5, 3, "MERGE_REDUCE_TASK") is mer
    assert reg.get("plain").resolve(3, None, "SHARDING_TASK") is plain
    with pytest.raises(UnknownTask, match="no map function for task 'OTHER'"):
        spec.resolve(4, 1, "OTHER")
    with pytest.raises(UnknownTask, match="map executor"):
        spec.resolve(1, None, "CLUSTER_TASK")
    with pytest.raises(UnknownTask, match="unknown task type 9"):
        reg.get("plain").resolve(9, None, None)


def test_map_functions_added_after_registration_are_found():
    ex = sj.MapExecutor("late")
    reg = ExecutorRegistry()
    reg.register(ex)

    @ex.map("LATER")
    def later(args): ...

    assert reg.get("late").resolve(4, 1, "LATER") is later


def test_registration_errors():
    reg = ExecutorRegistry()

    def undecorated(args): ...

    with pytest.raises(sj.SnailJobError, match="undecorated is not decorated with @job"):
        reg.register(undecorated)
    with pytest.raises(sj.ExecutorRegistrationError, match="expected an @job function"):
        reg.register(42)  # type: ignore[arg-type]
    a = sj.job("same")(lambda args: None)
    b = sj.job("same")(lambda args: None)
    reg.register(a)
    reg.register(a)  # the same object again is fine
    with pytest.raises(sj.ExecutorRegistrationError, match="already registered"):
        reg.register(b)
    ex = sj.MapExecutor("m")
    ex.map()(lambda args: None)
    with pytest.raises(sj.ExecutorRegistrationError, match="ROOT_MAP' is already defined"):
        ex.map()(lambda args: None)
    with pytest.raises(sj.ExecutorRegistrationError, match="non-blank"):
        sj.job("  ")
