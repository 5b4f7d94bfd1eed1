# syntax=docker/dockerfile:1
#
# sekisho container image: one static binary on distroless, as a non-root user.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t sekisho .
#   docker run --rm -p 3128:3128 -p 127.0.0.1:9128:9128 sekisho
#
# With no volume it runs on the embedded defaults (embedded geo database and
# rules), listening on 0.0.0.0:3128 (proxy) and 0.0.0.0:9128 (admin, metrics)
# inside the container: that is all /etc/sekisho/sekisho.yaml in the image
# says (deploy/docker/sekisho.yaml). To configure it, mount a folder with
# your own sekisho.yaml (and rules) over /etc/sekisho — a folder, not single
# files, so that rules edited on the host reload in the container:
#
#   docker run -p 3128:3128 -v /srv/sekisho:/etc/sekisho:ro \
#       -v /var/lib/GeoIP:/var/lib/GeoIP:ro sekisho
#
# The build step below is also deploy/build.sh, which CI runs (Docker cannot
# run there); deploy/dockerfile_test.go fails when the two disagree.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
ENV GOTOOLCHAIN=local
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" -o /out/sekisho ./cmd/sekisho

# distroless/static: CA certificates, tzdata and /etc/passwd, no shell, no
# package manager. Pin it by digest in production (image@sha256:...).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="sekisho" \
      org.opencontainers.image.description="Egress proxy that blocks uploads to servers abroad" \
      org.opencontainers.image.source="https://github.com/sekisho/sekisho" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/sekisho /usr/local/bin/sekisho
COPY deploy/docker/sekisho.yaml /etc/sekisho/sekisho.yaml
# nonroot (65532) by number, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 3128 9128
ENTRYPOINT ["/usr/local/bin/sekisho"]
CMD ["run", "--config", "/etc/sekisho/sekisho.yaml"]
# `sekisho healthcheck` GETs http://127.0.0.1:9128/healthz: exit 0 healthy,
# 1 not. If your sekisho.yaml moves admin_listen off port 9128, override it
# in exec form (there is no shell for --health-cmd's string form), e.g. in
# compose: test: ["CMD", "/usr/local/bin/sekisho", "healthcheck", "--url",
# "http://127.0.0.1:PORT/healthz"].
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sekisho", "healthcheck"]
