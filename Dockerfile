# legate's image: built with the Rust toolchain, run from a slim Debian
# with nothing but the binary, as an unprivileged user.
#   docker build -t legate .
#   docker run --rm legate --help

FROM rust:1-bookworm AS build
WORKDIR /src
# Every target the manifest names must exist, so the whole tree is copied
# (.dockerignore keeps target/ and .git out).
COPY . .
RUN cargo build --release --locked --bin legate \
    && strip target/release/legate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin legate
COPY --from=build /src/target/release/legate /usr/local/bin/legate
USER 10001
# xDS (+ rate-limit and access-log services), admin API, aggregator.
EXPOSE 18000 18001 18002
ENTRYPOINT ["legate"]
CMD ["serve", "--config", "/config", "--xds-addr", "0.0.0.0:18000", "--admin-addr", "0.0.0.0:18001", "--aggregator-addr", "0.0.0.0:18002"]
