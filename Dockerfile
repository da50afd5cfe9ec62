# Herald: one static binary in an image with nothing else, run as a
# non-root user.
#
#   docker build -t herald .
#   docker run --rm -p 8080:8080 herald serve --addr :8080

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/herald ./cmd/herald

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /herald
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/herald"]
CMD ["serve", "--addr", ":8080"]
