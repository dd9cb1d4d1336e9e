"""The deployment files keep their promises: the Dockerfile, .dockerignore, the compose files and
the scripts in deploy/, read statically or run against stand-ins (a fake CQL server, a fake HTTP
health endpoint, a fake cqlsh, a fake docker-entrypoint.sh). No container engine and no Cassandra
are needed; `tests/test_containers.py` runs the same files for real with podman.
"""
