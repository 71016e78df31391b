"""The slow path: optimize the prompt, make the image, store it, hand back a link."""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .errors import (ContentPolicyViolation, FluxWorkerError, InvalidRequest, NotConfigured,
                     RateLimited)
from .imaging import fit_to_size
from .models import ImageModel
from .optimizer import PromptOptimizer
from .store import ImageStore
from .workers_ai import GeneratedImage, WorkersAIClient

log = logging.getLogger(__name__)
KEY_BYTES = 16  # 128 bits from secrets: image links cannot be guessed


def new_image_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


@dataclass(frozen=True)
class ImageJob:
    """Everything the slow path needs, copied out of the request."""

    prompt: str
    model: ImageModel
    width: int
    height: int
    negative_prompt: str = ""


@dataclass(frozen=True)
class Image:
    key: str
    data: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class OptimizedPrompt:
    text: str
    failed: bool  # optimization was on but did not work: the original is used


class Capacity:
    """Counts generations in flight; refuses past the cap instead of queueing."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def try_acquire(self, slots: int = 1) -> bool:
        with self._lock:
            if self._used + slots > self.limit:
                return False
            self._used += slots
            return True

    def release(self, slots: int = 1) -> None:
        with self._lock:
            self._used -= slots

    @property
    def in_use(self) -> int:
        return self._used


class ImageService:
    """Runs generations on a bounded pool of background threads."""

    def __init__(self, *, workers_ai: WorkersAIClient | None, store: ImageStore,
                 optimizer: PromptOptimizer | None, expiration: int, max_concurrent: int):
        self.workers_ai = workers_ai
        self.store = store
        self.optimizer = optimizer
        self.expiration = expiration
        self.capacity = Capacity(max_concurrent)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent,
                                        thread_name_prefix="generation")

    @property
    def prompt_model(self) -> str | None:
        return self.optimizer.model if self.optimizer else None

    def reserve(self, slots: int = 1) -> None:
        """Take capacity for a request, before any response is started.

        :raises NotConfigured: when Workers AI credentials are missing.
        :raises InvalidRequest: when more slots are asked than the cap holds.
        :raises RateLimited: when this process is at its cap.
        """
        if self.workers_ai is None:
            raise NotConfigured("Workers AI is not configured on this server: the operator must "
                                "set CF_ACCOUNT_ID and CF_API_TOKEN.")
        if slots > self.capacity.limit:  # would never fit: retrying cannot help
            raise InvalidRequest(f"This server makes at most {self.capacity.limit} images at "
                                 "once; ask for fewer.", param="n")
        if not self.capacity.try_acquire(slots):
            raise RateLimited("This server is busy with other images; try again in a few "
                              "seconds.", retry_after=5)

    def submit(self, task: Callable[[], object], slots: int = 1) -> Future:
        """Run task on the pool (in the caller's logging context); free slots after."""
        context = contextvars.copy_context()

        def run():
            try:
                return context.run(task)
            finally:
                self.capacity.release(slots)

        return self._pool.submit(run)

    def optimize(self, prompt: str, width: int, height: int) -> OptimizedPrompt:
        """Return the prompt to draw: optimized when that is on and works."""
        if self.optimizer is None:
            return OptimizedPrompt(prompt, failed=False)
        try:
            return OptimizedPrompt(self.optimizer.optimize(prompt, width, height), failed=False)
        except FluxWorkerError as exc:
            log.warning("prompt optimization failed, using the original prompt: %s", exc.message)
            return OptimizedPrompt(prompt, failed=True)

    def create(self, job: ImageJob, timings: dict[str, float] | None = None) -> Image:
        """Make the image at exactly the job's size and store it.

        :raises FluxWorkerError: when it cannot be made; once made, it is kept.
        """
        timings = {} if timings is None else timings
        started = time.monotonic()
        generated = self._generate(job)
        data = fit_to_size(generated.data, job.width, job.height)
        timings["generate_ms"] = (time.monotonic() - started) * 1000
        started = time.monotonic()
        key = new_image_key()
        self.store.put(key, data, self.expiration)
        timings["store_ms"] = (time.monotonic() - started) * 1000
        return Image(key, data, generated.content_type, job.width, job.height)

    def _generate(self, job: ImageJob) -> GeneratedImage:
        prompt = fit_prompt(job.prompt, job.model.max_prompt_chars)
        inputs = job.model.inputs(prompt, job.width, job.height,
                                  negative_prompt=job.negative_prompt)
        try:
            return self.workers_ai.generate(job.model, inputs)
        except ContentPolicyViolation:
            # flux-1-schnell flags harmless prompts now and then; a second try
            # often passes, so one retry is worth it before giving up.
            log.info("Workers AI flagged the prompt; retrying once")
            return self.workers_ai.generate(job.model, inputs)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=False)


def fit_prompt(prompt: str, limit: int) -> str:
    """Shorten a (model-written) prompt to the limit at a word boundary."""
    if len(prompt) <= limit:
        return prompt
    cut = prompt[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:")

