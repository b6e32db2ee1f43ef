# The two commands of the README: `make demo` and `make test`. Both bootstrap what they need.
.PHONY: demo test lint typecheck unit integration lowest lock bench protos bootstrap clean

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	.venv/bin/python -m scripts.demo

lint: bootstrap
	.venv/bin/ruff check paygress tests bench scripts
	.venv/bin/ruff format --check paygress tests bench scripts

typecheck: bootstrap
	.venv/bin/mypy paygress tests bench scripts

unit: bootstrap
	.venv/bin/pytest -q tests/unit

integration: bootstrap
	.venv/bin/pytest -q tests/integration

# The unit tests again, against the lowest dependency versions pyproject.toml allows (~30 s).
lowest: bootstrap
	scripts/deps lowest

# Rewrites constraints.txt (the versions .venv, CI and the image install) from pyproject.toml.
lock: bootstrap
	scripts/deps lock

test: lint typecheck
	.venv/bin/pytest -q -p no:cacheprovider tests
	scripts/deps lowest

bench: bootstrap
	.venv/bin/python -m bench.ext_authz

protos: bootstrap

clean:
	rm -rf .venv .venv-mint .venv-lowest paygress/v1 .pytest_cache .mypy_cache .ruff_cache
