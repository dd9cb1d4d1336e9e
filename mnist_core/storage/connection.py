"""Building the one Cluster/Session of a process from the settings, with a bounded connection retry.

Everything the driver needs (contact points, port, datacenter, credentials, TLS, consistency,
timeouts, retry and reconnection policies) comes from :class:`mnist_core.settings.Settings`,
and every failure leaves as a project exception whose message tells the user what to do.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable

from cassandra import AuthenticationFailed, ConsistencyLevel, DriverException, OperationTimedOut, UnresolvableContactPoints
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
    WriteType,
)

from mnist_core.settings import Settings
from mnist_core.storage.errors import StorageAuthenticationError, StorageUnavailable

logger = logging.getLogger(__name__)

# Attempts the driver gets for one idempotent statement that timed out on the server.
IDEMPOTENT_RETRY_LIMIT = 2


class IdempotentWriteRetryPolicy(RetryPolicy):
    """The driver's default policy, plus retries of write timeouts for statements marked idempotent.

    Every write of the storage layer is an INSERT or a plain column UPDATE keyed by a
    client-generated id, so sending it again cannot duplicate anything; the driver's default
    policy still refuses to retry such writes because it cannot know that.
    """

    def on_write_timeout(self, query, consistency, write_type, required_responses, received_responses, retry_num):
        if query is not None and query.is_idempotent and write_type in (WriteType.SIMPLE, WriteType.UNLOGGED_BATCH):
            if retry_num < IDEMPOTENT_RETRY_LIMIT:
                return self.RETRY, consistency
            return self.RETHROW, None
        return super().on_write_timeout(
            query, consistency, write_type, required_responses, received_responses, retry_num
        )

    def on_request_error(self, query, consistency, error, retry_num):
        if query is not None and query.is_idempotent and retry_num < IDEMPOTENT_RETRY_LIMIT:
            return self.RETRY_NEXT_HOST, None
        return self.RETHROW, None


def consistency_level(settings: Settings) -> int:
    return ConsistencyLevel.name_to_value[settings.cassandra_consistency]


def target_name(settings: Settings) -> str:
    """What an outbox entry is for: the contact points, port and keyspace these settings name."""
    hosts = ",".join(sorted(settings.cassandra_contact_points))
    return f"{hosts}:{settings.cassandra_port}/{settings.cassandra_keyspace}"


def describe_hosts(settings: Settings) -> str:
    return ", ".join(f"{host}:{settings.cassandra_port}" for host in settings.cassandra_contact_points)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_enabled:
        return None
    context = ssl.create_default_context(cafile=str(settings.cassandra_tls_ca_file))
    context.check_hostname = settings.cassandra_tls_verify_hostname
    if settings.cassandra_tls_certificate_file is not None:
        context.load_cert_chain(
            certfile=str(settings.cassandra_tls_certificate_file), keyfile=str(settings.cassandra_tls_key_file)
        )
    return context


def build_cluster(settings: Settings) -> Cluster:
    """A Cluster configured from the settings; nothing is contacted until ``connect()``."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.cassandra_datacenter)),
        retry_policy=IdempotentWriteRetryPolicy(),
        consistency_level=consistency_level(settings),
        request_timeout=settings.cassandra_request_timeout_seconds,
    )
    auth_provider = None
    if settings.authentication_enabled:
        auth_provider = PlainTextAuthProvider(
            username=settings.cassandra_username, password=settings.cassandra_password
        )
    return Cluster(
        contact_points=list(settings.cassandra_contact_points),
        port=settings.cassandra_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth_provider,
        ssl_context=_ssl_context(settings),
        connect_timeout=settings.cassandra_connect_timeout_seconds,
        control_connection_timeout=settings.cassandra_connect_timeout_seconds,
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=10.0),
        protocol_version=5,
    )


def unresolvable_hosts(settings: Settings) -> list[str]:
    """The contact points whose names do not resolve (what a stopped compose service leaves)."""
    missing = []
    for host in settings.cassandra_contact_points:
        try:
            socket.getaddrinfo(host, settings.cassandra_port)
        except (socket.gaierror, UnicodeError):
            missing.append(host)
    return missing


def _unresolvable(settings: Settings, error: Exception) -> StorageUnavailable:
    hosts = unresolvable_hosts(settings) or list(settings.cassandra_contact_points)
    names = ", ".join(f"'{host}'" for host in hosts)
    return StorageUnavailable(
        f"Cannot resolve the Cassandra host name {names}: no such host is known here (is the "
        "Cassandra service stopped, or MNIST_CASSANDRA_CONTACT_POINTS misspelt?)."
    )


def _credentials_rejected(settings: Settings) -> StorageAuthenticationError:
    return StorageAuthenticationError(
        f"Cassandra at {describe_hosts(settings)} rejected the username "
        f"'{settings.cassandra_username}' or its password. Check MNIST_CASSANDRA_USERNAME and "
        "MNIST_CASSANDRA_PASSWORD (or the Streamlit secrets)."
    )


def _authentication_failure(error: NoHostAvailable) -> Exception | None:
    for host_error in (error.errors or {}).values():
        if isinstance(host_error, AuthenticationFailed):
            return host_error
    return None


def connect(
    settings: Settings,
    *,
    attempts: int | None = None,
    retry_delay_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Cluster, Session]:
    """Connect with a bounded number of attempts, waiting a little longer before each new one.

    Raises StorageAuthenticationError at once when the credentials are rejected (retrying
    cannot help), and StorageUnavailable once every attempt has failed.
    """
    attempts = settings.cassandra_connect_attempts if attempts is None else attempts
    retry_delay_seconds = (
        settings.cassandra_connect_retry_delay_seconds if retry_delay_seconds is None else retry_delay_seconds
    )
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1; got {attempts}.")
    started = time.monotonic()
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            # The driver resolves the contact points here, in the constructor.
            cluster = build_cluster(settings)
        except UnresolvableContactPoints as error:
            last_error = _unresolvable(settings, error)
            logger.warning("Cassandra connection attempt %d of %d failed: %s", attempt, attempts, last_error)
            if attempt < attempts:
                sleep(retry_delay_seconds * attempt)
            continue
        try:
            session = cluster.connect()
            return cluster, session
        except NoHostAvailable as error:
            cluster.shutdown()
            if _authentication_failure(error) is not None:
                raise _credentials_rejected(settings) from error
            last_error = error
        except AuthenticationFailed as error:
            cluster.shutdown()
            raise _credentials_rejected(settings) from error
        except (OperationTimedOut, OSError, DriverException) as error:
            cluster.shutdown()
            last_error = error
        logger.warning("Cassandra connection attempt %d of %d failed: %s", attempt, attempts, last_error)
        if attempt < attempts:
            sleep(retry_delay_seconds * attempt)
    elapsed = time.monotonic() - started
    if isinstance(last_error, StorageUnavailable):
        raise last_error
    raise StorageUnavailable(
        f"Cannot reach Cassandra at {describe_hosts(settings)} after {attempts} attempt"
        f"{'s' if attempts != 1 else ''} ({elapsed:.1f} s). Start a local node with 'scripts/cassandra start', "
        "or check MNIST_CASSANDRA_CONTACT_POINTS and MNIST_CASSANDRA_PORT."
    ) from last_error
