"""The Cloudflare accounts the service draws with: CF_ACCOUNT_ID/CF_API_TOKEN,
and any more in CF_ACCOUNTS (README, "Several Cloudflare accounts")."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What a token may hold and still be sent in a header as it is: printable
# ASCII, no spaces (Cloudflare's are 40 letters, digits, - and _).
TOKEN = re.compile(r"[\x21-\x7e]{1,512}")


@dataclass(frozen=True)
class CloudflareAccount:
    """One account and its API token; repr shows neither in full."""

    id: str = field(repr=False)
    token: str = field(repr=False)

    @property
    def label(self) -> str:
        """The id shortened, for logs and the status page: enough to tell
        accounts apart, not the whole (secret-scrubbed) id."""
        return self.id if len(self.id) <= 8 else f"{self.id[:4]}…{self.id[-4:]}"

    @property
    def key(self) -> str:
        """The account's name in shared state (the id, hashed)."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:16]

    @property
    def token_key(self) -> str:
        """This account with this token, hashed: a refused token's mark does
        not outlive the operator replacing the token."""
        return hashlib.sha256(f"{self.id}\0{self.token}".encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"CloudflareAccount({self.label})"


def parse_accounts(value: str, variable: str = "CF_ACCOUNTS") -> tuple[
        tuple[CloudflareAccount, ...], list[str]]:
    """Read `id:token` entries separated by commas, spaces or new lines.

    Returns the accounts and one line per mistake; no line shows a token.
    """
    accounts: list[CloudflareAccount] = []
    mistakes: list[str] = []
    seen: dict[str, int] = {}
    entries = [entry for entry in re.split(r"[\s,]+", value) if entry]
    for number, entry in enumerate(entries, start=1):
        account_id, colon, token = entry.partition(":")
        where = f"{variable} entry {number}"
        if not colon or not token:
            mistakes.append(f"{where} has no token: write account_id:api_token")
        elif not ACCOUNT_ID.fullmatch(account_id):
            mistakes.append(f"{where} has no valid account id before the colon (letters, "
                            "digits, - and _; Cloudflare's are 32 hex digits)")
        elif not TOKEN.fullmatch(token):
            mistakes.append(f"{where} has a token with characters a header cannot carry")
        elif account_id in seen:
            mistakes.append(f"{where} repeats the account of entry {seen[account_id]}")
        else:
            seen[account_id] = number
            accounts.append(CloudflareAccount(account_id, token))
    return tuple(accounts), mistakes
