# Two entry points: `make run` starts Chronicle, `make test` runs the tests.
# Both create .venv and install Chronicle into it on first use.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' -e ./client
	touch $@

.PHONY: install run test schema
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/chronicle up

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Regenerate schema/current.sql (the schema of a freshly migrated database) after adding a migration.
schema: $(VENV)/.installed
	$(VENV)/bin/python -m schema.dump_current
