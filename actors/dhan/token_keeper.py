"""TokenKeeper: the Dhan access token's life, on the scheduler (a root child, `token-keeper`).

Where it sits: its own child of the root supervisor, started first, whenever the process has Dhan
credentials (the Dhan feed, the Dhan broker or Dhan option chains). It is an adapter's actor, so it lives
with the Dhan adapters; the runtime builds it (`assemble_token_keeper`) and hands its `TokenState` to every
Dhan component and to the trading subtree's risk guard (an EntryHold).

What it does, every `dhan.token_check_seconds` (a scheduler timer telling it `CheckToken`; a component that
sees Dhan refuse the token tells it at once):

  * at start, `TOKEN_EXPIRES_AT` (or `TOKEN_UNREADABLE` for a token that is not a JWT: its expiry is unknown);
  * `dhan.token_warn_before_seconds` (60 min) before expiry, `TOKEN_EXPIRING`, once per token;
  * `dhan.token_renew_before_seconds` before expiry, a new token: Dhan's RenewToken when
    `dhan.auto_renew_token` (only while the token is still valid), else or if that fails the PIN + TOTP login
    (`dhan.totp_secret_file`, `dhan.pin_file`). The new token is swapped into every component
    (`TOKEN_RENEWED`; REST headers at once, the feed and the order-update socket reconnect with it) and
    written back to the secrets file it came from (`TOKEN_PERSISTED`; atomic, mode 0600). A failure is
    `TOKEN_RENEWAL_FAILED` and retried with a doubling delay (capped at 5 minutes) until it works;
  * an operator who writes a new token into that file has it picked up (`TOKEN_RELOADED`), no restart;
  * when the token has expired (or Dhan refused it) and no way of renewing it worked: `BROKER_AUTH_EXPIRED`
    (one incident per token, level CRITICAL). Entries are denied and health is 503 naming it (TokenState);
    exits are still attempted; nothing crashes, nothing restarts in a loop, the keeper keeps trying.

Every HTTP call has a timeout (dhan.request_timeout_seconds); the handler never sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.clock import Clock
from actors.dhan.token import RenewalFailed, SecretFile, TokenRenewer, TokenState, find_token_file
from actors.wiring import HealthCheck, Infrastructure, Subtree
from config.settings import DhanSettings
from core.market import to_iso_ist
from core.token import TokenError, TokenPhase, read_claims, token_phase
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink, ChildSpec

__all__ = ["CheckToken", "TokenKeeper", "TokenKeeperHandles", "assemble_token_keeper"]

MAX_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class CheckToken:
    """Look at the token now (the timer, a rejection, a test)."""

    why: str = "timer"


class TokenKeeper(SupervisedActor):
    def __init__(self, link: ChildLink | None, state: TokenState, renewer: TokenRenewer, dhan: DhanSettings,
                 clock: Clock, scheduler: Scheduler, secret_file: SecretFile | None) -> None:
        super().__init__(link)
        self.state = state
        self.renewer = renewer
        self.auto_renew = dhan.auto_renew_token
        self.warn_before = dhan.token_warn_before_seconds
        self.renew_before = dhan.token_renew_before_seconds
        self.check_seconds = dhan.token_check_seconds
        self.clock = clock
        self.scheduler = scheduler
        self.secret_file = secret_file
        self.timer: Timer | None = None
        self.unsubscribe: Any = None

    def started(self) -> None:
        ref = self.actor_ref
        self.unsubscribe = self.state.on_rejected(lambda where: tell_quietly(ref, CheckToken(f"rejected: {where}")))
        self._announce()
        self.timer = self.scheduler.call_every(self.check_seconds, tell_quietly, ref, CheckToken())
        ref.tell(CheckToken("start"))

    def release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.unsubscribe is not None:
            self.unsubscribe()

    def receive(self, message: Any) -> Any:
        if isinstance(message, CheckToken):
            self._check(message.why)
            return None
        return super().receive(message)

    # -- the check -------------------------------------------------------------------------------------------

    def _check(self, why: str) -> None:
        now = self.clock.now()
        self._reload_from_file()
        state = self.state
        phase = token_phase(state.claims(), now, warn_before=self.warn_before, renew_before=self.renew_before)
        dead = state.dead_reason(now)
        if phase in (TokenPhase.EXPIRING, TokenPhase.RENEW_DUE) and state.warned_version != state.version:
            state.warned_version = state.version
            claims = state.claims()
            assert claims is not None
            self.log.event("TOKEN_EXPIRING", f"the Dhan access token expires at {to_iso_ist(claims.expires_at)} "
                           f"(in {claims.seconds_left(now) / 60:.0f} min)", level=30,
                           expires_at=to_iso_ist(claims.expires_at),
                           seconds_left=round(claims.seconds_left(now), 1), renewal=self._ways(dead))
        due = bool(dead) or phase == TokenPhase.RENEW_DUE
        if due and now >= state.next_attempt_at and self._ways(dead):
            if self._renew(now, dead):
                return
            dead = state.dead_reason(now)
        if dead and state.incident_version != state.version:
            state.incident_version = state.version
            state.incident = dead
            self.log.event("BROKER_AUTH_EXPIRED", f"{dead}; no renewal worked ({self._ways(dead) or 'none set up'})"
                           ": entries are denied, exits are still attempted; put a new token in "
                           "dhan_access_token.txt or fix the renewal", level=50, reason=dead, trigger=why,
                           renewal=self._ways(dead), last_error=state.last_error or None)

    def _ways(self, dead: str) -> str:
        """The renewal paths open for a token in this state: RenewToken needs a token that still works."""
        ways = []
        if self.auto_renew and not dead:
            ways.append("RenewToken")
        if self.renewer.can_login:
            ways.append("TOTP")
        return "+".join(ways)

    def _renew(self, now: float, dead: str) -> bool:
        state = self.state
        errors = []
        state.begin_renewal()
        try:
            for way in self._ways(dead).split("+"):
                try:
                    token = self.renewer.renew(state.current()) if way == "RenewToken" else self.renewer.login()
                except RenewalFailed as exc:
                    errors.append(str(exc))
                    continue
                self._adopt(token, way, now)
                return True
        finally:
            state.end_renewal()
        state.failures += 1
        delay = min(MAX_RETRY_SECONDS, self.check_seconds * 2 ** (state.failures - 1))
        state.next_attempt_at = now + delay
        state.last_error = "; ".join(errors)
        self.log.event("TOKEN_RENEWAL_FAILED", f"no new Dhan token: {state.last_error}; next try in {delay:.0f} s",
                       level=40, attempt=state.failures, retry_in=round(delay, 3))
        return False

    def _adopt(self, token: str, how: str, now: float) -> None:
        state = self.state
        state.swap(token)
        state.failures = 0
        state.next_attempt_at = 0.0
        state.last_error = ""
        state.renewals += 1
        state.last_renewal = f"{how} at {to_iso_ist(now)}"
        claims = state.claims()
        expires = to_iso_ist(claims.expires_at) if claims else None
        self.log.event("TOKEN_RENEWED", f"new Dhan access token by {how}, expires {expires}; swapped into REST, "
                       "the market feed and the order-update socket", how=how, expires_at=expires)
        self._persist(token)

    def _persist(self, token: str) -> None:
        if self.secret_file is None:
            self.log.event("TOKEN_NOT_PERSISTED", "the token did not come from a secrets file (environment or "
                           "settings): the renewed token lives in memory only; a restart needs a new one",
                           level=30)
            return
        try:
            self.secret_file.write(token)
        except OSError as exc:
            self.log.event("TOKEN_PERSIST_FAILED", f"could not write {self.secret_file.path}: {exc.strerror or exc}"
                           "; the renewed token lives in memory only", level=40, path=str(self.secret_file.path))
            return
        self.log.event("TOKEN_PERSISTED", f"renewed token written to {self.secret_file.path} (0600)",
                       path=str(self.secret_file.path))

    def _reload_from_file(self) -> None:
        """An operator replaced the token in its file: use it (if it is not the current one, nor expired)."""
        file = self.secret_file
        if file is None or not file.changed():
            return
        try:
            token = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            self.log.event("TOKEN_FILE_UNREADABLE", f"{file.path}: {exc}", level=30)
            return
        if not token or token == self.state.current():
            return
        try:
            claims = read_claims(token)
        except TokenError as exc:
            self.log.event("TOKEN_FILE_IGNORED", f"{file.path} holds no usable token ({exc})", level=30)
            return
        if claims.is_expired(self.clock.now()):
            self.log.event("TOKEN_FILE_IGNORED", f"{file.path} holds a token that expired at "
                           f"{to_iso_ist(claims.expires_at)}", level=30)
            return
        self.state.swap(token)
        self.state.failures = 0
        self.state.next_attempt_at = 0.0
        self.log.event("TOKEN_RELOADED", f"new token from {file.path}, expires {to_iso_ist(claims.expires_at)}",
                       expires_at=to_iso_ist(claims.expires_at))

    def _announce(self) -> None:
        claims = self.state.claims()
        if claims is None:
            self.log.event("TOKEN_UNREADABLE", "the Dhan access token is not a JWT: its expiry is unknown (Dhan "
                           "refusing it is still noticed)", level=30)
            return
        now = self.clock.now()
        self.log.event("TOKEN_EXPIRES_AT", f"the Dhan access token expires at {to_iso_ist(claims.expires_at)} "
                       f"(in {claims.seconds_left(now) / 3600:.1f} h)", expires_at=to_iso_ist(claims.expires_at),
                       seconds_left=round(claims.seconds_left(now), 1), auto_renew=self.auto_renew,
                       totp=self.renewer.can_login)


@dataclass(frozen=True)
class TokenKeeperHandles:
    subtree: Subtree  # its spec is the keeper itself (a root child), health `broker_auth`, status `token`
    state: TokenState


def assemble_token_keeper(infra: Infrastructure, state: TokenState,
                          renewer: TokenRenewer | None = None) -> TokenKeeperHandles:
    """The token keeper as a root child (`token-keeper`), its health check `broker_auth` and status `token`."""
    s = infra.settings
    renewer = renewer or TokenRenewer(s, infra.clock)
    secret_file = find_token_file(s.secrets_dir, state.current())
    spec = ChildSpec("token-keeper", lambda link: TokenKeeper.start(
        link, state, renewer, s.dhan, infra.clock, infra.scheduler, secret_file), backoff=infra.backoff())

    def health() -> HealthCheck:
        ok, detail = state.health()
        return HealthCheck(ok, detail)

    subtree = Subtree(spec=spec, health={"broker_auth": health}, status={"token": state.status})
    return TokenKeeperHandles(subtree=subtree, state=state)
