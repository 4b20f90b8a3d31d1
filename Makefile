# The two commands of the README: `make run` and `make test`. Both install what they need
# (Debian packages, cargo-pgrx 0.18.1) idempotently; see scripts/.
.PHONY: run test setup bench
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh
setup:
	bash scripts/setup.sh
bench:
	bash scripts/bench.sh
