# PostgreSQL 15 with pg_webmon built the same way `make test` builds it (cargo-pgrx 0.18.1)
# and preloaded.
FROM postgres:15-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        postgresql-server-dev-15 libclang-dev clang pkg-config libssl-dev build-essential curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
RUN cargo install cargo-pgrx --version 0.18.1 --locked \
    && cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
WORKDIR /src
COPY . .
RUN cd pg_webmon && cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config --out-dir /out

FROM postgres:15-bookworm
COPY --from=build /out/usr/lib/postgresql/15/lib/ /usr/lib/postgresql/15/lib/
COPY --from=build /out/usr/share/postgresql/15/extension/ /usr/share/postgresql/15/extension/
COPY docker/initdb/ /docker-entrypoint-initdb.d/
CMD ["postgres", "-c", "shared_preload_libraries=pg_webmon", "-c", "pg_webmon.database=webmon"]
