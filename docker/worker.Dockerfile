# webmon-worker, the probe (also serves the demo target).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p webmon-worker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/webmon-worker /usr/local/bin/webmon-worker
USER nobody
ENTRYPOINT ["webmon-worker"]
