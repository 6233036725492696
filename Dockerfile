# syntax=docker/dockerfile:1
# Build: static binaries (no cgo), so the final images need no libc.
FROM golang:1.26 AS src
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .

FROM src AS build
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/refresher ./cmd/refresher

# The demo image (target "demo", docker compose --profile demo): the
# refresher plus serve --demo, with its embedded Redis and fake WeChat.
# Test code: never the production image.
FROM src AS build-demo
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/refresher-demo ./cmd/refresher-demo

FROM gcr.io/distroless/static-debian12:nonroot AS demo
COPY --from=build-demo /out/refresher-demo /usr/local/bin/refresher-demo
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/refresher-demo"]
CMD ["serve", "--demo", "--http-addr", "0.0.0.0:8080"]

# Run (the default target, last): the production refresher, distroless
# static, as the image's unprivileged "nonroot" user (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/refresher /usr/local/bin/refresher
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/refresher"]
CMD ["serve"]
