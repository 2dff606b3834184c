import json

import pytest

from snailjob import JobArgs, MapArgs, MergeReduceArgs, ReduceArgs, ShardingJobArgs
from snailjob.args import build_args, decode_args_str, decode_wf_context
from snailjob.wire.models import DispatchJobRequest

from .conftest import dispatch_body


def request(**fields):
    return DispatchJobRequest.model_validate(dispatch_body("x", **fields))


@pytest.mark.parametrize("args_str,expected", [
    (None, (None, None, None)),
    ("", (None, None, None)),
    ("   ", (None, None, None)),
    ('{"jobParams":"p"}', ("p", None, None)),
    ('{}', (None, None, None)),
    ('{"jobParams":"p","maps":{"a":1}}', ("p", {"a": 1}, None)),
    ('{"reduces":["1","2"]}', (None, None, ["1", "2"])),
    ("not json", ("not json", None, None)),
    ("42", ("42", None, None)),
    ('"text"', ('"text"', None, None)),
    ("[1,2]", ("[1,2]", None, None)),
    ("[" * 5000, ("[" * 5000, None, None)),
])
def test_args_str_decoding(args_str, expected):
    assert decode_args_str(args_str) == expected


@pytest.mark.parametrize("text,context,warned", [
    (None, {}, False), ("", {}, False), ('{"k":1}', {"k": 1}, False),
    ("oops", {}, True), ("[1]", {}, True), ("7", {}, True),
])
def test_wf_context_decoding(text, context, warned):
    value, warning = decode_wf_context(text)
    assert value == context
    assert (warning is not None) == warned


def test_args_type_per_task_type():
    assert type(build_args(request(taskType=1))[0]) is JobArgs
    assert type(build_args(request(taskType=2))[0]) is JobArgs
    shard = build_args(request(taskType=3, shardingIndex=1, shardingTotal=3,
                                  argsStr='{"jobParams":"b"}')).args
    assert isinstance(shard, ShardingJobArgs)
    assert (shard.sharding_index, shard.sharding_total, shard.job_params) == (1, 3, "b")
    root = build_args(request(taskType=4, mrStage=1, taskName="ROOT_MAP",
                                 argsStr='{"jobParams":"j","maps":""}')).args
    assert isinstance(root, MapArgs) and root.task_name == "ROOT_MAP" and root.map_result == ""
    reduce = build_args(request(taskType=5, mrStage=2, taskName="REDUCE_TASK",
                                   argsStr=json.dumps({"jobParams": "j", "maps": ["1", "{\"a\":2}"]}))).args
    assert isinstance(reduce, ReduceArgs) and reduce.map_result == ["1", "{\"a\":2}"]
    merge = build_args(request(taskType=5, mrStage=3, taskName="MERGE_REDUCE_TASK",
                                  argsStr=json.dumps({"jobParams": "j", "reduces": ["3", "4"]}))).args
    assert isinstance(merge, MergeReduceArgs) and merge.reduces == ["3", "4"]


def test_a_sentinel_item_reaches_the_job_unwrapped():
    for maps in ({"__snailjob_sentinel__": 1, "item": {"i": 0}},
                 json.dumps({"__snailjob_sentinel__": 1, "item": {"i": 0}})):  # as an object or its text
        args, _, sentinel = build_args(request(taskType=4, mrStage=1, taskName="SQUARE",
                                               argsStr=json.dumps({"jobParams": "j", "maps": maps})))
        assert sentinel and args.map_result == {"i": 0}
    # look-alikes are items like any other
    for maps in ({"__snailjob_sentinel__": 1, "item": 1, "more": 2}, {"__snailjob_sentinel__": 2, "item": 1},
                 '{"__snailjob_sentinel__": broken', {"item": 1}):
        args, _, sentinel = build_args(request(taskType=4, mrStage=1, taskName="SQUARE",
                                               argsStr=json.dumps({"jobParams": "j", "maps": maps})))
        assert not sentinel and args.map_result == maps
    # only map tasks have sentinels
    args, _, sentinel = build_args(request(taskType=1, argsStr=json.dumps(
        {"jobParams": "j", "maps": {"__snailjob_sentinel__": 1, "item": 1}})))
    assert not sentinel


def test_ids_and_workflow_fields():
    args, warnings, _ = build_args(request(taskType=1, taskId=77, workflowTaskBatchId=5, workflowNodeId=6,
                                        retryCount=2, wfContext='{"a":1}'))
    assert (args.task_id, args.workflow_task_batch_id, args.workflow_node_id, args.retry_count) == (77, 5, 6, 2)
    assert args.get_wf_context("a") == 1 and args.get_wf_context("missing") is None
    args.append_context("a", 2)
    args.append_context("b", "x")
    assert args.get_wf_context("a") == 2
    assert args.change_wf_context.to_dict() == {"a": 2, "b": "x"}
    assert warnings == []


def test_bad_wf_context_gives_warning_not_error():
    args, warnings, _ = build_args(request(wfContext="{broken"))
    assert args.wf_context == {} and len(warnings) == 1 and "wfContext" in warnings[0]
