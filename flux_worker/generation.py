"""The slow path: each request's images, from reserved capacity to stored links.

A `GenerationRun` owns one request's generations for their whole life; chat
(streamed or not) and the Images API all go through it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import access, metrics
from .account_pool import AccountPool, Drawn
from .errors import FluxWorkerError, InvalidRequest, NotConfigured, RateLimited
from .imaging import FORMAT_NAMES, prepare_image
from .key_usage import KeyUsage
from .optimizer import PromptOptimizer
from .planning import ImageJob, image_seeds
from .store import ImageStore
from .workers_ai import image_bytes

log = logging.getLogger(__name__)
KEY_BYTES = 16  # 128 bits from secrets: image links cannot be guessed
# Answers decoded at once per process (JSON, base64, then Pillow). This is
# CPU work, so more at once is no faster, and each holds a few times the
# image in memory. Bodies are read before a slot is taken, so a slow body
# never holds one.
DECODE_SLOTS = 4


def new_image_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


@dataclass(frozen=True)
class Image:
    key: str
    data: bytes
    content_type: str
    width: int
    height: int
    seed: int | None = None  # the seed the model was given; None when it took none

    @property
    def output_format(self) -> str:
        """OpenAI's name for the format: png, jpeg or webp."""
        return FORMAT_NAMES[self.content_type]


@dataclass(frozen=True)
class OptimizedPrompt:
    text: str
    failed: bool  # optimization was on but did not work: the original is used


@dataclass(frozen=True)
class RunResult:
    """What a run made: images paid for are kept even when a sibling failed."""

    optimized: OptimizedPrompt
    images: list[Image] = field(default_factory=list)
    errors: list[FluxWorkerError] = field(default_factory=list)

    def first_error(self) -> FluxWorkerError:
        return self.errors[0] if self.errors else FluxWorkerError("No image was made.")


class Progress:
    """What a run reports as it goes (on its own thread); endpoints override
    what they show."""

    def optimized(self, prompt: OptimizedPrompt) -> None:
        """The prompt to draw is known."""

    def generating(self) -> None:
        """Workers AI has been asked."""

    def image_made(self, image: Image) -> None:
        """One image is stored (siblings may still be in the works)."""

    def finished(self, result: RunResult) -> None:
        """The run is over, on every path; capacity is already released."""


class Capacity:
    """Counts generations in flight; refuses past the cap instead of queueing."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def acquire_up_to(self, wanted: int) -> int:
        """Take as many slots as are free, up to `wanted`; 0 when none is."""
        with self._lock:
            taken = min(wanted, self.limit - self._used)
            if taken <= 0:
                metrics.CAPACITY_REJECTIONS.inc()
                return 0
            self._used += taken
            metrics.IN_FLIGHT.inc(taken)
            return taken

    def release(self, slots: int = 1) -> None:
        with self._lock:
            self._used -= slots
            metrics.IN_FLIGHT.dec(slots)

    @property
    def in_use(self) -> int:
        return self._used


class ImageService:
    """The clients, store and bounded pool that runs use."""

    def __init__(self, *, accounts: AccountPool | None, store: ImageStore,
                 optimizer: PromptOptimizer | None, expiration: int, max_concurrent: int,
                 usage: KeyUsage):
        self.accounts = accounts
        self.usage = usage
        self.store = store
        self.optimizer = optimizer
        self.expiration = expiration
        self.capacity = Capacity(max_concurrent)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrent,
                                       thread_name_prefix="generation")
        self._decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
        # Models that refused a seed at run time (flux-1-schnell's schema
        # does not list the seed its docs show): sent none from then on.
        self.seedless_models: set[str] = set()

    @property
    def prompt_model(self) -> str | None:
        return self.optimizer.model if self.optimizer else None

    def start(self, job: ImageJob, count: int = 1, progress: Progress | None = None
              ) -> GenerationRun:
        """Reserve capacity for `count` images of a job and start making them.

        :raises NotConfigured: when Workers AI credentials are missing.
        :raises RateLimited: when this process is at its cap.
        """
        return GenerationRun(self, job, count, progress or Progress())

    def optimize(self, prompt: str, width: int, height: int) -> OptimizedPrompt:
        """Return the prompt to draw: optimized when that is on and works."""
        if self.optimizer is None:
            return OptimizedPrompt(prompt, failed=False)
        try:
            return OptimizedPrompt(self.optimizer.optimize(prompt, width, height), failed=False)
        except FluxWorkerError as exc:
            log.warning("prompt optimization failed, using the original prompt: %s", exc.message)
            return OptimizedPrompt(prompt, failed=True)

    def make_image(self, job: ImageJob, seed: int, timings: dict[str, float]) -> Image:
        """Generate, verify and fit, then store one image.

        :raises FluxWorkerError: when it cannot be made; once made, it is kept.
        """
        started = time.monotonic()
        drawn, sent_seed = self._draw(job, seed)
        timings["generate_ms"] = (time.monotonic() - started) * 1000
        started = time.monotonic()
        with self._decode_slots:
            prepared = prepare_image(image_bytes(drawn.answer, job.model), job.width, job.height,
                                     output_format=job.output_format,
                                     quality=job.output_compression)
        account, cost, neurons = drawn.account.label, _neurons_text(drawn), drawn.neurons
        del drawn  # the raw body can go before the store call
        timings["decode_ms"] = (time.monotonic() - started) * 1000
        started = time.monotonic()
        key = new_image_key()
        self.store.put(key, prepared.data, self.expiration)
        timings["store_ms"] = (time.monotonic() - started) * 1000
        access.count_image()
        caller = access.current_record().key
        if caller is not None:
            self.usage.spent(caller, neurons)
            metrics.KEY_IMAGES.labels(caller).inc()
            metrics.KEY_NEURONS.labels(caller).inc(neurons or 0.0)
        metrics.IMAGES.labels(job.model.id, "made").inc()
        metrics.NEURONS.labels(job.model.id, account).inc(neurons or 0.0)
        for name, milliseconds in timings.items():
            metrics.PHASE_SECONDS.labels(job.model.id, name.removesuffix("_ms")).observe(
                milliseconds / 1000)
        log.info("image generated key=%s model=%s size=%dx%d seed=%s account=%s neurons=%s %s",
                 key, job.model.id, job.width, job.height, sent_seed, account, cost,
                 " ".join(f"{k}={v:.0f}" for k, v in timings.items()))
        return Image(key, prepared.data, prepared.content_type, job.width, job.height, sent_seed)

    def _draw(self, job: ImageJob, seed: int) -> tuple[Drawn, int | None]:
        """Ask Workers AI for the picture; return its answer and the seed it took.

        :raises FluxWorkerError: as the account pool raises it.
        """
        assert self.accounts is not None  # checked when the run started
        model = job.model
        width, height = job.draw_size or (job.width, job.height)
        sent_seed = seed if model.seed_field and model.id not in self.seedless_models else None
        inputs = model.inputs(fit_prompt(job.prompt, model.max_prompt_chars), width, height,
                              negative_prompt=job.negative_prompt, seed=sent_seed)
        files: dict[str, bytes] = {}
        if job.inputs is not None:
            fields, files = model.image_fields(job.inputs)
            inputs.update(fields)
        steps = inputs.get(model.steps_field or "")
        references = len(job.inputs.references) if job.inputs else 0
        estimate = model.price.neurons(
            width, height, steps if isinstance(steps, int) else None,
            [(model.reference_side, model.reference_side)] * references) if model.price else None
        # Only a seed the client chose draws the same picture again: only
        # then may AI Gateway answer from its cache.
        try:
            return self.accounts.draw(model, inputs, files, estimate=estimate,
                                      cacheable=job.seed_given and sent_seed is not None
                                      ), sent_seed
        except InvalidRequest as exc:
            if sent_seed is None or not _refuses_seed_field(exc):
                raise
        # A refused call makes nothing and costs nothing: ask once more without
        # the seed. Only if that works is the model sent none from then on.
        inputs.pop(model.seed_field or "seed", None)
        drawn = self.accounts.draw(model, inputs, files, estimate=estimate, cacheable=False)
        log.warning("%s refused the seed field; sending it none from now on", model.id)
        self.seedless_models.add(model.id)
        return drawn, None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=False)


class GenerationRun:
    """One request's generations, from reserved capacity to stored images.

    The only owner of its capacity: it reserves its slots when created (or
    raises before anything started) and releases them exactly once, when its
    work ends on whatever path. A run of more images than it has slots makes
    them that many at a time. Each upstream call inside is bounded by its own
    deadline, so a run always ends.
    """

    def __init__(self, service: ImageService, job: ImageJob, count: int, progress: Progress):
        if service.accounts is None:
            raise NotConfigured("Workers AI is not configured on this server: the operator must "
                                "set CF_ACCOUNT_ID and CF_API_TOKEN.")
        # As many slots as are free: a big run under load goes slower rather
        # than being refused or keeping others out.
        slots = service.capacity.acquire_up_to(count)
        if not slots:
            raise RateLimited("This server is busy with other images; try again in a few "
                              "seconds.", retry_after=5)
        self._caller = access.current_record().key  # whose images these are (hashed)
        if self._caller is not None:
            try:
                service.usage.reserve(self._caller, count)
            except BaseException:
                service.capacity.release(slots)
                raise
        self._service = service
        self._job = job
        self._count = count
        self._slots = slots
        self._progress = progress
        self._released = False
        try:
            self._future = service.pool.submit(contextvars.copy_context().run, self._run)
        except BaseException:
            self._release()
            raise

    def result(self) -> RunResult:
        """Wait for the run to end and return what it made."""
        return self._future.result()

    def _run(self) -> RunResult:
        result = RunResult(OptimizedPrompt(self._job.prompt, failed=False))
        try:
            result = self._produce()
        except Exception as exc:  # a bug must still end the run and free its slots
            result = dataclasses.replace(result, errors=[_as_error(exc)])
        finally:
            self._release()
        self._progress.finished(result)
        return result

    def _produce(self) -> RunResult:
        service, job = self._service, self._job
        started = time.monotonic()
        # An edit's words are about a picture the optimizer cannot see: they stay as written.
        optimized = (service.optimize(job.prompt, job.width, job.height) if job.inputs is None
                     else OptimizedPrompt(job.prompt, failed=False))
        optimize_ms = (time.monotonic() - started) * 1000
        self._progress.optimized(optimized)
        self._progress.generating()
        job = dataclasses.replace(job, prompt=optimized.text)
        todo = deque(enumerate(image_seeds(job, self._count)))
        outcomes: dict[int, Image | FluxWorkerError] = {}

        def work() -> None:  # each of the run's slots takes images until none is left
            while todo:
                try:
                    index, seed = todo.popleft()
                except IndexError:  # another slot took the last one
                    return
                outcomes[index] = self._attempt(job, seed, optimize_ms)

        helpers = [service.pool.submit(contextvars.copy_context().run, work)
                   for _ in range(self._slots - 1)]
        work()
        for helper in helpers:
            helper.result()
        ordered = [outcomes[index] for index in sorted(outcomes)]
        images = [o for o in ordered if isinstance(o, Image)]
        errors = [o for o in ordered if isinstance(o, FluxWorkerError)]
        if images and errors:
            log.warning("%d of %d images failed: %s", len(errors), self._count, errors[0].message)
        return RunResult(optimized, images, errors)

    def _attempt(self, job: ImageJob, seed: int, optimize_ms: float) -> Image | FluxWorkerError:
        try:
            image = self._service.make_image(job, seed, {"optimize_ms": optimize_ms})
        except Exception as exc:  # one failure must not discard paid-for siblings
            metrics.IMAGES.labels(job.model.id, "failed").inc()
            if self._caller is not None:  # counted when the run started: given back
                self._service.usage.release(self._caller, 1)
            return _as_error(exc)
        try:
            self._progress.image_made(image)
        except Exception:  # showing it failed; the image is still the client's
            log.exception("progress report failed")
        return image

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._service.capacity.release(self._slots)


def _neurons_text(drawn: Drawn) -> str:
    """How the log names an image's cost: measured, cached, estimated or unknown."""
    if drawn.cached:
        return "0(cached)"
    if drawn.neurons is None:
        return "unpriced"
    return f"{drawn.neurons:g}" + ("" if drawn.measured else "(estimated)")


def _refuses_seed_field(exc: InvalidRequest) -> bool:
    """Whether Workers AI refused the seed field itself (its schema's
    `additionalProperties: false`), not a seed value: the message is about an
    additional property and names the seed or no property at all."""
    if exc.code != "upstream_validation_error":
        return False
    message = exc.message.lower()
    if "additional propert" not in message:
        return False
    named = message.rsplit("additional propert", 1)[1]
    return "seed" in named or "(" not in named


def _as_error(exc: Exception) -> FluxWorkerError:
    if isinstance(exc, FluxWorkerError):
        return exc
    log.exception("image generation failed")
    return FluxWorkerError("The server had an internal error.")


def fit_prompt(prompt: str, limit: int) -> str:
    """Shorten a (model-written) prompt to the limit at a word boundary."""
    if len(prompt) <= limit:
        return prompt
    cut = prompt[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:")
