# minidecode: two commands for students and CI.
#
#   make lab    set up .venv (once) and open JupyterLab on the first notebook
#   make test   set up .venv (once), then ruff and the whole test suite, notebooks included
#
# and three for students working on the exercises:
#
#   make start                       copy exercises/ into work/ (your own folder, never overwritten)
#   make grade NB=work/01_decode_loop.ipynb    grade one of your notebooks
#
# Set-up is idempotent: a stamp file keyed on pyproject.toml's hash makes the second run quick.
# Without `nvidia-smi`, torch is the CPU build (from the CPU index, or a wheel pip finds locally;
# its pure-Python dependencies then come from PyPI with the package); with `nvidia-smi`, the default
# PyPI build (CUDA). Override the version with TORCH_VERSION=..., the index with TORCH_CPU_INDEX=...

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= notebooks,dev
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

comma := ,
VENV_PY := $(VENV)/bin/python
PYPROJECT_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml', 'rb').read()).hexdigest()[:12])")
STAMP := $(VENV)/.minidecode-$(PYPROJECT_HASH)-$(subst $(comma),-,$(EXTRAS))
NOTEBOOK_DIRS := notebooks solutions
SANITIZE := tests/nbval_sanitize.cfg

.PHONY: help setup lab start grade test lint doctor exercises notebooks clean

help:
	@echo "make lab        set up .venv and open JupyterLab (the repository's root) on chapter 0"
	@echo "make start      copy the exercise notebooks into work/ (yours; existing files are kept)"
	@echo "make grade NB=work/01_decode_loop.ipynb   grade one exercise notebook"
	@echo "make test       set up .venv, then ruff check and pytest (tests/, notebooks/, solutions/)"
	@echo "make doctor     print what is installed and usable (paste it into bug reports)"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make notebooks  re-execute notebooks/ and solutions/ in place, then regenerate exercises/"

setup: $(STAMP)

$(STAMP):
	@if [ ! -x "$(VENV_PY)" ]; then \
		echo ">>> creating $(VENV) with $(PYTHON) -m venv"; \
		$(PYTHON) -m venv $(VENV) || exit 1; \
	else \
		echo ">>> $(VENV) exists; reinstalling because pyproject.toml changed or this is the first set-up"; \
	fi
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo ">>> NVIDIA GPU found: pip install torch==$(TORCH_VERSION) (CUDA build from PyPI)"; \
		$(VENV_PY) -m pip install "torch==$(TORCH_VERSION)" || exit 1; \
	else \
		echo ">>> no NVIDIA GPU: pip install torch==$(TORCH_VERSION), CPU build (its dependencies come next)"; \
		$(VENV_PY) -m pip install --no-deps "torch==$(TORCH_VERSION)" --extra-index-url $(TORCH_CPU_INDEX) || exit 1; \
	fi
	@echo ">>> pip install -e '.[$(EXTRAS)]'"
	@$(VENV_PY) -m pip install -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.minidecode-*
	@touch $(STAMP)
	@echo ">>> set-up done ($(STAMP))"

# Jupyter refuses to run as root (containers, CI) unless told to.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

# The server's root is the repository, so the file browser shows notebooks/, work/ and exercises/.
lab: setup
	@echo ">>> $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) (opens notebooks/00_tour.ipynb)"
	@$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/notebooks/00_tour.ipynb $(LAB_ARGS)

# A student's workspace: work/ is ignored by git, ruff and the tests, and no target overwrites it.
start:
	@mkdir -p work
	@for nb in exercises/*.ipynb; do \
		if [ -e "work/$$(basename $$nb)" ]; then echo "kept    work/$$(basename $$nb) (yours)"; \
		else cp "$$nb" work/ && echo "copied  work/$$(basename $$nb)"; fi; \
	done
	@echo ">>> work in work/ (make lab, then open work/ in the file browser); grade with"
	@echo "    make grade NB=work/01_decode_loop.ipynb"

NB ?=
grade: setup
	@if [ -z "$(NB)" ]; then echo "usage: make grade NB=work/01_decode_loop.ipynb"; exit 2; fi
	@$(VENV_PY) -m minidecode grade "$(NB)" $(GRADE_ARGS)

lint: setup
	@echo ">>> ruff check ."
	@$(VENV)/bin/ruff check .

# pytest exits 5 when it collects no test at all; that is not a failure of the set-up.
test: lint
	@echo ">>> pytest tests/ + nbval over $(addsuffix /,$(NOTEBOOK_DIRS))"
	@$(VENV_PY) -m pytest -p no:cacheprovider tests $(NOTEBOOK_DIRS) \
		--nbval-lax --nbval-current-env --sanitize-with $(SANITIZE) $(PYTEST_ARGS); \
	status=$$?; \
	if [ $$status -eq 5 ]; then echo ">>> pytest collected no tests"; exit 0; fi; \
	exit $$status

doctor: setup
	@$(VENV_PY) -m minidecode doctor

exercises: setup
	@echo ">>> python -m minidecode.course.exercises build"
	@$(VENV_PY) -m minidecode.course.exercises build

notebooks: setup
	@echo ">>> executing $(addsuffix /*.ipynb,$(NOTEBOOK_DIRS)) in place (outputs are committed)"
	@$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.record_timing=False --ExecutePreprocessor.timeout=600 \
		$(foreach d,$(NOTEBOOK_DIRS),$(wildcard $(d)/*.ipynb))
	@$(VENV_PY) -m minidecode.course.exercises build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
