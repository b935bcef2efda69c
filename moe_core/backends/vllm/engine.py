"""The vLLM engine behind the backend: one engine core (`vllm.LLM`), or several through vLLM's own
data parallelism (`AsyncLLM`, whose client spreads the requests over every engine core).

Both answer the same three calls the backend needs: `generate` (outputs in the prompts' order),
`rpc` (a method of the worker extension on every worker of every engine core: the answers as
[engine core][worker]) and `shutdown`. `vllm.LLM` refuses `data_parallel_size > 1` ("not supported
for single-process usage"); `vllm serve` runs data parallelism through `AsyncLLM`, whose
data-parallel client (`DPLBAsyncMPClient`) balances requests over the engine cores and reaches all
of them with `call_utility_all_async`. `AsyncLLM` is asynchronous: here it lives on an event loop
of its own, in a daemon thread, and the backend's synchronous calls wait on it.

`serve_headless` runs the engine cores of a node that joins a head node's server (several nodes):
what `vllm serve --headless` does, with Polyroute's worker extension and settings.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vllm import LLM, SamplingParams

from moe_core.backends.vllm.options import VLLMOptions
from moe_core.backends.vllm.worker import EXTENSION
from moe_core.errors import PolyrouteError

T = TypeVar("T")


class OneEngine:
    """One engine core (`vllm.LLM`): tensor parallelism at most."""

    ranks = 1

    def __init__(self, path: Path, options: VLLMOptions) -> None:
        self.llm = LLM(model=str(path), worker_extension_cls=EXTENSION, **options.engine_args())

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[Any]:
        outputs: list[Any] = self.llm.generate(list(prompts), params, use_tqdm=False)
        return outputs

    def rpc(self, method: str, *args: Any) -> list[list[Any]]:
        return [self.llm.collective_rpc(method, args=args)]

    def shutdown(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class DataParallelEngine:
    """`data_parallel_size` engine cores behind vLLM's data-parallel client (`AsyncLLM`), on an event
    loop of its own."""

    def __init__(self, path: Path, options: VLLMOptions) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.ranks = options.data_parallel_size
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="polyroute-vllm-dp", daemon=True)
        self._thread.start()
        args = AsyncEngineArgs(model=str(path), worker_extension_cls=EXTENSION, **options.engine_args())

        async def start() -> Any:
            return AsyncLLM.from_engine_args(args)

        try:
            self.llm = self._wait(start())
        except BaseException:
            self._stop_loop()
            raise

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def generate(self, prompts: Sequence[Any], params: SamplingParams) -> list[Any]:
        run = uuid.uuid4().hex

        async def one(index: int, prompt: Any) -> Any:
            final = None
            async for output in self.llm.generate(prompt, params, request_id=f"polyroute-{run}-{index}"):
                final = output
            return final

        async def every() -> list[Any]:
            return list(await asyncio.gather(*(one(i, prompt) for i, prompt in enumerate(prompts))))

        return self._wait(every())

    def rpc(self, method: str, *args: Any) -> list[list[Any]]:
        # AsyncLLM.collective_rpc reaches every engine core too, but answers with the first one's
        # answer only; the capture needs each engine core's (each holds its own requests' routing).
        async def every() -> list[list[Any]]:
            answers = await self.llm.engine_core.call_utility_all_async("collective_rpc", method, None, args, None)
            return list(answers)

        return self._wait(every())

    def shutdown(self) -> None:
        async def stop() -> None:  # on the loop's own thread: AsyncLLM cancels its tasks there
            self.llm.shutdown()

        try:
            self._wait(stop())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        """Let the client's tasks (output handler, stats) finish their cancellation, then end the loop."""

        async def drain() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(drain(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()


def check_platform(options: VLLMOptions) -> None:
    """Refuse what this platform's vLLM cannot run, before it starts: on vLLM's CPU backend, MoE
    layers under data parallelism gather every rank's tokens with `all_gatherv`, which its CPU
    communicator lacks (vLLM 0.32: NotImplementedError in the first forward pass, and the engine dies)."""
    from vllm.platforms import current_platform

    if options.data_parallel_size > 1 and current_platform.is_cpu():
        raise PolyrouteError(
            "vLLM's CPU backend cannot run MoE layers data-parallel (its CPU communicator has no all_gatherv): "
            "{data_parallel_size} needs GPUs; on CPUs, start several servers and give the client their URLs "
            "({backend} http://a:8765,http://b:8765)"
        )


def start_engine(path: Path, options: VLLMOptions) -> OneEngine | DataParallelEngine:
    """The engine these options ask for (vLLM's errors pass through)."""
    if options.data_parallel_size > 1:
        return DataParallelEngine(path, options)
    return OneEngine(path, options)


def serve_headless(path: Path, options: VLLMOptions) -> None:
    """Run this node's data-parallel engine cores for the head node's server until interrupted
    (`options.headless`: ranks data_parallel_start_rank .. + data_parallel_size_local - 1), as
    `vllm serve --headless` does (vllm/entrypoints/cli/serve.py, run_headless)."""
    import signal

    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.network_utils import get_tcp_uri
    from vllm.v1.engine.utils import CoreEngineProcManager
    from vllm.v1.executor import Executor

    args = AsyncEngineArgs(model=str(path), worker_extension_cls=EXTENSION, **options.engine_args())
    config = args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER, headless=True)
    parallel = config.parallel_config

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    engines = CoreEngineProcManager(
        local_engine_count=parallel.data_parallel_size_local,
        start_index=parallel.data_parallel_rank,
        local_start_index=0,
        vllm_config=config,
        local_client=False,
        handshake_address=get_tcp_uri(parallel.data_parallel_master_ip, parallel.data_parallel_rpc_port),
        executor_class=Executor.get_class(config),
        log_stats=False,
    )
    try:
        engines.monitor_engine_liveness()
    finally:
        engines.shutdown()
