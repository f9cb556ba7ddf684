# syntax=docker/dockerfile:1
# The Skybridge image: one binary that runs the operator (`skybridge run`) and the `fetch-model`
# init container of every serving pod it creates. Build (BuildKit), from the repository root:
#
#   docker build -t ghcr.io/skybridge-io/skybridge:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/skybridge:TAG --push .
#
# Stage 1 compiles the release code against glibc (rustls TLS, no OpenSSL) with the `image`
# profile: no debug info, symbols kept (the binary is also every serving pod's init container,
# so its size is cold-start time in a burst); stage 2 copies it
# onto distroless `cc` (glibc, libgcc, CA certificates, nothing else: no shell, no package
# manager), running as the distroless `nonroot` user 65532.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# .dockerignore keeps the context to the manifests, src/, benches/ and harness/. Registry and
# target caches persist between builds on the same builder.
COPY . .
# jemalloc (the binary's allocator) fixes its page size when it is built: arm64 kernels run 4 KiB
# or 64 KiB pages, and a 64 KiB build runs on both.
ARG TARGETARCH
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    if [ "$TARGETARCH" = arm64 ]; then export JEMALLOC_SYS_WITH_LG_PAGE=16; fi \
    && cargo build --profile image --locked --bin skybridge \
    && install -D -m 0755 target/image/skybridge /out/skybridge \
    && /out/skybridge --version

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="skybridge" \
      org.opencontainers.image.description="Kubernetes operator that bursts stateless model replicas from private to public clouds, keeping sensitive work private" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/skybridge-io/skybridge"
COPY --from=build /out/skybridge /usr/local/bin/skybridge
# distroless nonroot: uid/gid 65532. The chart also sets runAsUser 65532 and runAsNonRoot.
USER 65532:65532
# /metrics, /readyz, /livez of `skybridge run`.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/skybridge"]
CMD ["run"]
