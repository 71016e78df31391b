"""Several Cloudflare accounts as one: each generation goes to the least-used
account that can serve it, and moves on at once when one cannot.

What the accounts' answers teach is kept in shared state (shared_state), so
every gunicorn worker knows it without asking Cloudflare again:
- 429 / 3036 (daily allowance used): that account is skipped until 00:00 UTC;
- 429 / 3040 or any rate limit: skipped for Retry-After (else a short while);
- a refused token or a blocked or unknown account: taken out, told to the
  operator, and tried again after RECHECK_SECONDS (or a restart);
- 403 / 5016 (a model's licence not accepted): that model only is skipped.
Each account's images and neurons are counted per UTC day against a daily
budget (CF_DAILY_NEURONS: the free allowance, or a spending cap on Workers
Paid): an image goes first to an account it fits in, and an account whose
budget is spent is skipped until 00:00 UTC (one image may take it past).
"""

from __future__ import annotations

import datetime
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .accounts import CloudflareAccount
from .cloudflare import next_utc_midnight, utc_day
from .errors import (
    AllowanceExhausted,
    FluxWorkerError,
    NoUsableAccount,
    RateLimited,
    UpstreamMisconfigured,
)
from .http_session import Answer
from .models import ImageModel
from .shared_state import MemoryState, SharedState, StateUnavailable
from .workers_ai import WorkersAIClient, from_cache, measured_neurons

log = logging.getLogger(__name__)
BUSY_SECONDS = 10  # a 429 (3040 or another) that names no Retry-After
MAX_BACKOFF_SECONDS = 300  # the longest Retry-After that keeps an account aside
RESERVED_SECONDS = 5  # Retry-After when only images in flight fill the budgets
RECHECK_SECONDS = 600  # a taken-out account is tried again after this long
USAGE_TTL = 2 * 86400  # a day's counts outlive the day, for the status page at midnight
STATE_WARNING_SECONDS = 60  # "shared state unavailable" is logged at most this often
STATE_RETRY_SECONDS = 10  # after a failure, the shared state is left alone this long
# Cloudflare's codes that say the account itself is unusable, not the request:
# token refused (10000, 9106, 9109; AI Gateway's 2009), unknown account (7003),
# account blocked (3023). A bare 401/403/404 (an edge page) is not enough.
ACCOUNT_REFUSED = {10000, 9106, 9109, 2009, 7003, 3023}
MODEL_REFUSED = {5016}  # the model's licence agreement is not accepted


@dataclass(frozen=True)
class Member:
    account: CloudflareAccount
    client: WorkersAIClient


@dataclass(frozen=True)
class Drawn:
    """One successful call: its answer, who made it and what it cost."""

    answer: Answer
    account: CloudflareAccount
    neurons: float | None  # None: the model has no published price
    measured: bool  # from Cloudflare's cf-ai-neurons header, not our estimate
    cached: bool  # AI Gateway answered from its cache


@dataclass(frozen=True)
class AccountStatus:
    """What the status page and /v1/status show of one account."""

    label: str
    state: str  # healthy | backing_off | exhausted | out
    until: float | None  # unix seconds the state lasts until; None when healthy
    images_today: int
    neurons_today: float
    last_error: int | None  # Cloudflare's code (or HTTP status) of the last refusal
    last_error_at: float | None

    def as_json(self) -> dict[str, object]:
        return {"account": self.label, "state": self.state,
                "until": _iso(self.until) if self.until else None,
                "images_today": self.images_today, "neurons_today": round(self.neurons_today, 2),
                "last_error": self.last_error,
                "last_error_at": _iso(self.last_error_at) if self.last_error_at else None}


@dataclass(frozen=True)
class _Marks:
    """One account's state as read."""

    exhausted_until: float
    backoff_until: float
    out_until: float
    models_out: dict[str, float]
    images: float
    neurons: float
    last_error: float | None
    last_error_at: float | None

    def blocked_until(self, now: float, model: ImageModel) -> float:
        """When this account may serve the model again (≤ now: it may)."""
        return max(self.exhausted_until, self.backoff_until, self.out_until,
                   self.models_out.get(model.id, 0.0))


class AccountPool:
    """The only owner of the Workers AI clients and of the accounts' state."""

    def __init__(self, members: list[Member], state: SharedState, *, daily_neurons: float,
                 clock: Callable[[], float] = time.time):
        assert members, "an account pool needs at least one account"
        self.members = members
        self.daily_neurons = daily_neurons  # 0: no budget (Workers Paid)
        self._state = state
        self._local = MemoryState(clock)  # while the shared state is unavailable
        self._clock = clock
        self._turn = itertools.count()
        self._in_flight: dict[str, float] = {}
        self._lock = threading.Lock()  # the in-flight counts
        self._choosing = threading.Lock()  # one choice (and its reservation) at a time
        self._state_warned_at = -float(STATE_WARNING_SECONDS)
        self._state_down_until = 0.0  # time.monotonic(): a slow, dead Redis is not asked each time

    def draw(self, model: ImageModel, inputs: dict[str, object], files: dict[str, bytes],
             *, estimate: float | None, cacheable: bool) -> Drawn:
        """Run the model on the best account, moving on while accounts refuse.

        :raises FluxWorkerError: what the request itself met (a bad prompt, a
            timeout), or, once no account can serve, a 429 until the earliest
            recovery, or 503 when every account is taken out.
        """
        tried: set[str] = set()
        last: FluxWorkerError | None = None
        cost = estimate or 0.0
        while True:
            # Choosing and reserving are one step, so that images starting
            # together in this process see each other's share of the budget.
            with self._choosing:
                now = self._clock()
                in_flight = self._reserved()  # before the counts: none is missed
                marks = self._marks(now)
                order = self._order(model, estimate, marks, in_flight, now, tried)
                if not order:
                    raise self._no_account(model, marks, in_flight, now, last)
                member = order[0]
                self._count_in_flight(member, cost)
            tried.add(member.account.key)
            try:
                answer = member.client.generate(model, inputs, files, cacheable=cacheable,
                                                patient=len(order) == 1)
            except FluxWorkerError as exc:
                self._count_in_flight(member, -cost)
                if not self._learn(member, model, exc):
                    raise
                last = exc
                continue
            except BaseException:
                self._count_in_flight(member, -cost)
                raise
            try:
                return self._used(member, answer, estimate)
            finally:  # counted in the day's usage first, then no longer in flight
                self._count_in_flight(member, -cost)

    def _order(self, model: ImageModel, estimate: float | None, marks: dict[str, _Marks],
               in_flight: dict[str, float], now: float, tried: set[str]) -> list[Member]:
        """The accounts that may serve now, best first: those this image fits
        in today's budget before those it would take past it, then the least
        used today (in flight here included), then in turn. An account whose
        budget is spent is left out, as if Cloudflare had said so."""
        turn = next(self._turn)
        count = len(self.members)
        usable = []
        for index, member in enumerate(self.members):
            key = member.account.key
            used = marks[key].neurons + in_flight.get(key, 0.0)
            if (key not in tried and marks[key].blocked_until(now, model) <= now
                    and not self._spent(used)):
                budget = self.daily_neurons
                overshoot = bool(budget) and used + (estimate or 0.0) > budget
                usable.append((overshoot, used, (index - turn) % count, member))
        return [member for *_, member in sorted(usable, key=lambda item: item[:3])]

    def _spent(self, used: float) -> bool:
        """Whether an account has used its daily budget. One image may take it
        past the budget (never refused for costing more than a day's budget)."""
        return bool(self.daily_neurons) and used >= self.daily_neurons

    def _reserved(self) -> dict[str, float]:
        with self._lock:
            return dict(self._in_flight)

    def _learn(self, member: Member, model: ImageModel, exc: FluxWorkerError) -> bool:
        """Mark what a refusal says about the account; False when it is about
        the request instead (the caller raises it as it is)."""
        account, now = member.account, self._clock()
        code = float(exc.upstream_code) if exc.upstream_code is not None else -1.0
        error = {"last_error": code, "last_error_at": now}
        if isinstance(exc, AllowanceExhausted):
            until = next_utc_midnight(now)
            log.warning("Cloudflare account %s has used its daily allowance (code %s); the "
                        "others serve until 00:00 UTC", account.label, exc.upstream_code)
            self._write(_account_name(account), {"exhausted_until": until, **error})
        elif isinstance(exc, RateLimited):
            wait = min(exc.retry_after or BUSY_SECONDS, MAX_BACKOFF_SECONDS)
            log.info("Cloudflare account %s is busy or rate limited (code %s); skipped for "
                     "%d s", account.label, exc.upstream_code, wait)
            self._write(_account_name(account), {"backoff_until": now + wait, **error})
        elif exc.upstream_code in MODEL_REFUSED:
            log.error("Cloudflare account %s cannot run %s (code %s); the others serve it. %s",
                      account.label, model.id, exc.upstream_code, exc.message)
            self._write(_out_name(account), {f"model:{model.id}": now + RECHECK_SECONDS})
            self._write(_account_name(account), error)
        elif exc.upstream_code in ACCOUNT_REFUSED or exc.code == "gateway_not_found":
            log.error("Cloudflare account %s taken out for %d min (code %s): %s", account.label,
                      RECHECK_SECONDS // 60, exc.upstream_code, exc.message)
            self._write(_out_name(account), {"until": now + RECHECK_SECONDS})
            self._write(_account_name(account), error)
        else:
            return False
        return True

    def _no_account(self, model: ImageModel, marks: dict[str, _Marks],
                    reserved: dict[str, float], now: float,
                    last: FluxWorkerError | None) -> FluxWorkerError:
        """The error for a generation no account can serve now."""
        several = len(self.members) > 1
        exhausted, busy, outs, filling = [], [], [], False
        for member in self.members:
            m = marks[member.account.key]
            if m.out_until > now:
                outs.append(m.out_until)
            elif m.exhausted_until > now:
                exhausted.append(m.exhausted_until)
            elif m.backoff_until > now:
                busy.append(m.backoff_until)
            elif self._spent(m.neurons):
                exhausted.append(next_utc_midnight(now))
            elif self._spent(m.neurons + reserved.get(member.account.key, 0.0)):
                filling = True  # images in flight here may leave room when they end
        if filling:
            busy.append(now + RESERVED_SECONDS)
        if exhausted and not busy:
            what = (f"its daily budget of {self.daily_neurons} neurons (CF_DAILY_NEURONS)"
                    if all(m.exhausted_until <= now for m in marks.values())
                    else "its daily Workers AI allowance")
            return AllowanceExhausted(
                ("Every usable Cloudflare account of this server has" if several else
                 "This server's Cloudflare account has") + f" used {what}; it resets at "
                "00:00 UTC.", retry_after=max(1, round(min(exhausted) - now)))
        if exhausted or busy:
            wait = max(1, round(min(exhausted + busy) - now))
            return RateLimited(f"Workers AI is busy for {'every account of ' if several else ''}"
                               f"this server; try again in {wait} s.", retry_after=wait)
        if last is not None:  # this request met the refusal: say it as it came
            return last
        if not outs:  # only this model is refused everywhere
            return UpstreamMisconfigured(f"No Cloudflare account of this server can run "
                                         f"{model.id} (the operator must accept its licence "
                                         "agreement; see the log).",
                                         code="model_agreement_required")
        return NoUsableAccount(
            ("None of this server's Cloudflare accounts can" if several else
             "This server's Cloudflare account cannot") + " be used: Cloudflare refused the "
            "token, the account or the AI Gateway (the operator must check CF_API_TOKEN, "
            "CF_ACCOUNTS and CF_AI_GATEWAY*; see the log).",
            retry_after=max(1, round(min(outs) - now)))

    def _used(self, member: Member, answer: Answer, estimate: float | None) -> Drawn:
        cached = from_cache(answer)
        measured = measured_neurons(answer)
        neurons = 0.0 if cached else measured if measured is not None else estimate
        self._add(_usage_name(member.account, self._clock()),
                  {"images": 1.0, "neurons": neurons or 0.0})
        return Drawn(answer, member.account, neurons, measured is not None, cached)

    def _count_in_flight(self, member: Member, cost: float) -> None:
        with self._lock:
            key = member.account.key
            self._in_flight[key] = self._in_flight.get(key, 0.0) + cost

    def status(self) -> list[AccountStatus]:
        """Each account as every worker sees it now."""
        now = self._clock()
        marks = self._marks(now)
        shown = []
        for member in self.members:
            m = marks[member.account.key]
            if m.out_until > now:
                state, until = "out", m.out_until
            elif m.exhausted_until > now:
                state, until = "exhausted", m.exhausted_until
            elif self._spent(m.neurons):
                state, until = "exhausted", next_utc_midnight(now)
            elif m.backoff_until > now:
                state, until = "backing_off", m.backoff_until
            else:
                state, until = "healthy", None
            shown.append(AccountStatus(
                member.account.label, state, until, int(m.images), m.neurons,
                int(m.last_error) if m.last_error is not None and m.last_error >= 0 else None,
                m.last_error_at))
        return shown

    def forget_refusals(self) -> None:
        """Give taken-out accounts a fresh try (at start: the operator may have
        fixed what was refused)."""
        for member in self.members:
            self._write(_out_name(member.account), {"until": 0.0}, ttl=1)

    # shared state, with this process's memory while it is unavailable
    def _marks(self, now: float) -> dict[str, _Marks]:
        names = []
        for member in self.members:
            names += [_account_name(member.account), _out_name(member.account),
                      _usage_name(member.account, now)]
        records = None
        if self._state_up():
            try:
                records = self._state.read(names)
            except StateUnavailable as exc:
                self._state_failed(exc)
        if records is None:
            records = self._local.read(names)
        found = {}
        for member in self.members:
            account = records.get(_account_name(member.account), {})
            out = records.get(_out_name(member.account), {})
            usage = records.get(_usage_name(member.account, now), {})
            found[member.account.key] = _Marks(
                exhausted_until=account.get("exhausted_until", 0.0),
                backoff_until=account.get("backoff_until", 0.0),
                out_until=out.get("until", 0.0),
                models_out={name[len("model:"):]: until for name, until in out.items()
                            if name.startswith("model:")},
                images=usage.get("images", 0.0), neurons=usage.get("neurons", 0.0),
                last_error=account.get("last_error"), last_error_at=account.get("last_error_at"))
        return found

    def _write(self, name: str, fields: dict[str, float], ttl: float = USAGE_TTL) -> None:
        self._change("write", name, fields, ttl)

    def _add(self, name: str, amounts: dict[str, float]) -> None:
        self._change("add", name, amounts, USAGE_TTL)

    def _change(self, how: str, name: str, values: dict[str, float], ttl: float) -> None:
        """Write or add in this process's memory, and in the shared state while it is up."""
        for state in (self._local, self._state) if self._state_up() else (self._local,):
            try:
                getattr(state, how)(name, values, ttl)
            except StateUnavailable as exc:
                self._state_failed(exc)

    def _state_up(self) -> bool:
        return time.monotonic() >= self._state_down_until

    def _state_failed(self, exc: StateUnavailable) -> None:
        now = time.monotonic()
        self._state_down_until = now + STATE_RETRY_SECONDS
        if now - self._state_warned_at >= STATE_WARNING_SECONDS:
            self._state_warned_at = now
            log.warning("the shared account state is unavailable (%s); this process goes on "
                        "with what it knows", exc)

    def close(self) -> None:
        """Close the clients; the shared state is create_app's (Services closes it)."""
        for member in self.members:
            member.client.close()


def _account_name(account: CloudflareAccount) -> str:
    return f"account:{account.key}"


def _out_name(account: CloudflareAccount) -> str:
    return f"account-out:{account.token_key}"


def _usage_name(account: CloudflareAccount, now: float) -> str:
    return f"usage:{account.key}:{utc_day(now)}"


def _iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")
