# The "respond to the stop event" example of the snail-job-python 0.1.3 README.
# The function is unchanged; the README snippet left out the imports and the
# main block, which are added here as in the other examples.
import time

import snailjob as sj


@sj.job("testJobExecutor")
def test_job_executor(args: sj.JobArgs) -> sj.ExecuteResult:
    for i in range(40):
        if sj.ThreadPoolCache.event_is_set(args.task_batch_id):     # 1. 判断当前任务批次是否被终止
            sj.SnailLog.REMOTE.info("任务已经被中断，立即返回")
            return sj.ExecuteResult.failure()
        time.sleep(1)

    return sj.ExecuteResult.success()


if __name__ == "__main__":
    sj.ExecutorManager.register(test_job_executor)
    sj.client_main()
