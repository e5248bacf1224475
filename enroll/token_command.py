"""``enroll token``: the API's bearer tokens (enroll/tokens.py).

    enroll token create --scope identify,enrol [--name "front desk"]   the secret on stdout, this once only
    enroll token list                                                  id, name, scopes, created, last used
    enroll token revoke ID                                             refused by the API from now on

Scopes: identify (identify, verify), enrol (add, list, remove people), admin (everything).
"""
from __future__ import annotations

import time

from enroll.tokens import SCOPES


def add_parser(sub, common) -> None:
    p = sub.add_parser("token", parents=[common], help="create, list or revoke API tokens")
    actions = p.add_subparsers(dest="token_action", required=True, metavar="ACTION", parser_class=type(p))
    create = actions.add_parser("create", parents=[common], help="a new token (printed once)")
    create.add_argument("--scope", required=True, metavar="SCOPES",
                        help=f"comma-separated, some of: {', '.join(SCOPES)}")
    create.add_argument("--name", default="", help="what the token is for")
    actions.add_parser("list", parents=[common], help="every token (never the secrets: only hashes are kept)")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("id", type=int, metavar="ID")


def cmd_token(args, home, notes):
    from enroll.tokens import open_token_store, parse_scopes

    if args.token_action == "create":
        scopes = parse_scopes(args.scope)  # refused before the home is touched
    with open_token_store(home) as tokens:
        if args.token_action == "create":
            token, secret = tokens.create(scopes, args.name)
            notes.append(f"note: token {token.id} ({', '.join(token.scopes)}) created; this is the only time its "
                         "secret is shown: only its SHA-256 is stored")
            return {**token.to_dict(), "token": secret}, [secret]
        if args.token_action == "revoke":
            token = tokens.revoke(args.id)
            return token.to_dict(), [f"token {token.id} revoked"]
        rows = tokens.tokens()
    return {"tokens": [t.to_dict() for t in rows]}, [_line(t) for t in rows] + [
        f"{len(rows)} token{'s' if len(rows) != 1 else ''}, {sum(t.revoked is None for t in rows)} live"]


def _line(token) -> str:
    when = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"  # noqa: E731
    state = f"revoked {when(token.revoked)}" if token.revoked else f"last used {when(token.last_used)}"
    return f"{token.id}  {token.name or '-'}  [{','.join(token.scopes)}]  created {when(token.created)}, {state}"
