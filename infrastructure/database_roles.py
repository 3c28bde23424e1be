"""The two logins Chronicle uses: the owner who migrates, and the application login.

Migrations run as the owner (DATABASE_MIGRATION_URL). The API, the workers and the CLI run as
the application login (DATABASE_URL), a member of the group role chronicle_app (schema/0006),
which appends only through the log's append functions (schema/0016).
"""

from __future__ import annotations

from typing import NamedTuple

import psycopg
from psycopg import conninfo, sql

from infrastructure.config import Settings

APP_GROUP = "chronicle_app"
# The application login `chronicle up` makes on its embedded PostgreSQL.
EMBEDDED_APP_LOGIN = "chronicle_login"


class StoreUrls(NamedTuple):
    """Where migrations connect (the owner) and where everything else does (the application)."""

    migration: str
    app: str


def configured_urls(settings: Settings) -> StoreUrls | None:
    """The URLs the settings name; None when DATABASE_URL is unset (an embedded store).

    Without DATABASE_MIGRATION_URL, migrations run as DATABASE_URL's login (one login for both),
    through DATABASE_DIRECT_URL when it is set: a migration holds a session lock, past any pooler.
    """
    if not settings.database_url:
        return None
    migration = settings.database_migration_url or settings.database_direct_url or settings.database_url
    return StoreUrls(migration, settings.database_url)


def with_login(url: str, user: str, password: str | None = None) -> str:
    """`url` with another user (and password, if given)."""
    params = conninfo.conninfo_to_dict(url)
    params["user"] = user
    params.pop("password", None)
    if password:
        params["password"] = password
    return conninfo.make_conninfo(**params)


def login_of(url: str) -> str | None:
    """The user a URL names, or None when it leaves it to libpq's default."""
    return conninfo.conninfo_to_dict(url).get("user")


def ensure_app_login(owner_url: str, app_url: str) -> None:
    """Make the application login of `app_url` a member of chronicle_app, creating it if missing.

    Safe when another database of the cluster does the same at once. Does nothing when both
    URLs name one login, or when the owner may not create roles (an administrator then makes
    the login by hand: README, "Managed PostgreSQL").
    """
    params = conninfo.conninfo_to_dict(app_url)
    login = params.get("user")
    if not login or login == login_of(owner_url):
        return
    with psycopg.connect(owner_url, autocommit=True) as conn:
        me = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
        if not me[0]:
            return
        for statement in (
            sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP_GROUP)),
            sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login))
            + (sql.SQL(" PASSWORD {}").format(sql.Literal(params["password"])) if params.get("password") else sql.SQL("")),
        ):
            try:
                conn.execute(statement)
            except psycopg.errors.DuplicateObject:
                pass  # there already, or made by another database's migration at the same moment
        member = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (login, APP_GROUP)).fetchone()[0]
        if not member:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_GROUP), sql.Identifier(login)))
