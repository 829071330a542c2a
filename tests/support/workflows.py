"""A minimal workflow and activity for e2e tests (a module of its own, so the SDK's workflow
sandbox can re-import it deterministically)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def greet(name: str) -> str:
    """The activity: runs on the worker, through Envoy like everything else."""
    return f"hello, {name}"


@workflow.defn
class GreetingWorkflow:
    """Starts one activity and returns its result."""

    @workflow.run
    async def run(self, name: str) -> str:
        """Greet ``name`` via the activity."""
        return await workflow.execute_activity(
            greet, name, start_to_close_timeout=timedelta(seconds=30)
        )
