"""The testing guide's example (docs/guides/testing.md includes this file's sections)."""

from __future__ import annotations

import json

import snailjob as sj


# --8<-- [start:job]
@sj.job("invoiceTotal")
def invoice_total(args: sj.JobArgs) -> dict:
    amounts = json.loads(args.job_params)
    sj.SnailLog.REMOTE.info("summing %d amounts", len(amounts))
    return {"total": sum(amounts)}
# --8<-- [end:job]


# --8<-- [start:test]
def test_invoice_total(snailjob_emulator):
    env = snailjob_emulator.client_env()  # SNAIL_* values pointing at the emulator
    settings = sj.Settings.load(env_file=None, snail_server_host=env["SNAIL_SERVER_HOST"],
                                snail_server_port=int(env["SNAIL_SERVER_PORT"]),
                                snail_token=env["SNAIL_TOKEN"], snail_group_name=env["SNAIL_GROUP_NAME"],
                                snail_namespace=env["SNAIL_NAMESPACE"], snail_host_port=0,
                                snail_bind_host="127.0.0.1", snail_heartbeat_interval=0.5)
    with sj.Client(settings, executors=[invoice_total]):
        snailjob_emulator.wait_for_clients(1)
        batch = snailjob_emulator.trigger("invoiceTotal", args_str="[10, 20, 12]")
        assert batch.wait(10) == 3  # SUCCESS, as the server would record it
        assert json.loads(batch.tasks[0].result) == {"total": 42}
        snailjob_emulator.wait_until(lambda: bool(snailjob_emulator.logs), timeout=10)  # shipped every 5 s
    assert snailjob_emulator.problems == []  # the client broke no protocol rule
# --8<-- [end:test]
