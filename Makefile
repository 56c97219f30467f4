# Switchboard. `make run` starts the gateway on its embedded defaults; `make test` runs every test.
GO      ?= go
BIN     := bin
DATA    ?= ./data

.PHONY: run build test vet bench sbbench fmt clean

run: build
	$(BIN)/switchboard serve --dev --data-dir $(DATA)

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

# PostgreSQL runs too when SWITCHBOARD_TEST_POSTGRES_DSN is set (.ci/run sets it).
test: vet
	@[ -n "$$SWITCHBOARD_TEST_POSTGRES_DSN" ] || echo "note: SWITCHBOARD_TEST_POSTGRES_DSN is unset: the store suite runs on SQLite only (see .ci/postgres)"
	$(GO) test -count=1 -timeout 30m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Load test against a running gateway: make sbbench ARGS="-c 64 -d 20s"
sbbench: build
	$(BIN)/sbbench $(ARGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
