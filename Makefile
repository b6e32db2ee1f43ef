# The two commands of the README: `make demo` and `make test`. Both bootstrap what they need.
.PHONY: demo test lint typecheck unit integration bench protos bootstrap clean

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

test: lint typecheck
	.venv/bin/pytest -q -p no:cacheprovider tests

bench: bootstrap
	.venv/bin/python -m bench.ext_authz

protos: bootstrap

clean:
	rm -rf .venv .venv-mint paygress/v1 .pytest_cache .mypy_cache .ruff_cache
