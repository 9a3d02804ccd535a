# simclr-teach: `make lab` to study, `make test` to check everything. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NBTIMEOUT ?= 1800

.PHONY: setup lab test test-unit test-notebooks test-variant test-browser site test-site test-outside notebooks notebook-times bench lint assignments grade clean

# Set-up: a venv with the pinned requirements and the package (editable). Re-runs only when
# requirements.txt or pyproject.toml change, so it is fast when already done. --no-compile: pip
# would byte-compile every module of every package (a third of the install time); Python
# compiles the few that are imported when they first are.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# JupyterLab refuses to run as root (Docker containers, many cloud notebooks) without
# --allow-root; pass it only then. LAB_ARGS adds server options (.ci/run: --no-browser, a port).
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
LAB_ARGS   ?=
lab: setup  ## open the course in JupyterLab
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) $(LAB_ARGS) notebooks/

test: test-unit test-notebooks  ## unit tests, then every notebook under nbval

test-unit: setup
	$(PY) -m pytest tests -m "not browser and not outside_clone"

# nbval runs each notebook once, and tests/nbval_grading.py grades its exercises in that run as a
# student's notebook meets them (blank answers score nothing, wrong answers are rejected, lesson
# cells run without the model answers). Instructors' plain `pytest --nbval-lax` leaves it out.
# The notebooks' slow evaluations (simclr_teach.memo) are kept in runs/cache/memo, as
# load_or_train keeps the trained runs, so that running the tests again reads them.
MEMO  := SIMCLR_TEACH_MEMO=1
NBVAL := -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NBTIMEOUT) \
	-p no:cacheprovider -p tests.nbval_grading

test-notebooks: setup
	$(MEMO) $(PY) $(NBVAL) notebooks/

# The course on a second machine, simulated: every notebook again with another seed and float32
# arithmetic (utils.default_seed / default_amp). Every assert must hold in both runs; the runs
# are cached under their own keys, the committed results files are read, not rerun.
VARIANT_SEED      ?= 1
VARIANT_PRECISION ?= float32
test-variant: setup  ## every notebook under nbval, as another machine would run it
	$(MEMO) SIMCLR_TEACH_SEED=$(VARIANT_SEED) SIMCLR_TEACH_PRECISION=$(VARIANT_PRECISION) \
	  $(PY) $(NBVAL) notebooks/

# Browser end-to-end test (tests/browser): notebooks 00-02 run in JupyterLab, driven through
# Debian's Chromium by Playwright (no browser download); screenshots go to artifacts/browser/.
# apt-get runs only when $(CHROMIUM) is missing; playwright is installed into .venv once.
CHROMIUM      ?= /usr/bin/chromium
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_STAMP := $(VENV)/.browser-installed

$(BROWSER_STAMP): tests/browser/requirements.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
	touch $(BROWSER_STAMP)

INSTALL_CHROMIUM := test -x $(CHROMIUM) || { $(SUDO) apt-get update && \
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	chromium fonts-dejavu-core; }

test-browser: setup $(BROWSER_STAMP)  ## the widgets in a real browser (JupyterLab + Chromium)
	$(INSTALL_CHROMIUM)
	SIMCLR_TEACH_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -m browser -p no:cacheprovider tests/browser

# The course as a static website (scripts/build_site.py, site/conf.py): Sphinx + myst-nb +
# sphinx-book-theme from the committed notebooks, the student version of the exercises, MathJax
# from the npm registry served by the site itself. Its packages go into .venv once, on first use.
SITE_STAMP := $(VENV)/.site-installed
$(SITE_STAMP): site/requirements.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r site/requirements.txt
	touch $(SITE_STAMP)

site: setup $(SITE_STAMP)  ## the course as a website in site/_build/html (INSTRUCTOR=1: solutions)
	$(PY) scripts/build_site.py$(if $(filter-out 0,$(INSTRUCTOR)), --instructor --out site/_build/instructor)

# every page in Chromium from 127.0.0.1 (tests/site): screenshots go to artifacts/site/
test-site: site $(BROWSER_STAMP)  ## the website in a real browser, offline
	$(INSTALL_CHROMIUM)
	SIMCLR_TEACH_CHROMIUM=$(CHROMIUM) $(PY) -m pytest -m browser -p no:cacheprovider tests/site

# A notebook opened outside a clone (Colab): 00 copied out of the repository and executed in a
# fresh venv; its first cell clones this repository's HEAD and installs it (tests/test_install_guard.py)
test-outside: setup  ## notebook 00 installs the course itself, from a copy outside the clone
	$(PY) -m pytest -m outside_clone -p no:cacheprovider tests/test_install_guard.py

NB ?= notebooks/*.ipynb
notebooks: setup  ## re-execute notebooks in place (all, or NB=notebooks/06_*.ipynb), then normalise
	$(PY) scripts/normalise_notebooks.py $(NB)
	for nb in $(NB); do \
	  $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=$(NBTIMEOUT) "$$nb" || exit 1; \
	done
	$(VENV)/bin/nbstripout --keep-output --keep-count $(NB)

# How long each notebook takes on a fresh clone (empty run cache) and warm: a table in README.
notebook-times: setup  ## time every notebook, cold and warm (~15 min), and update README's table
	$(PY) scripts/notebook_times.py --readme

bench: setup  ## benchmarks (see benchmarks/README.md)
	$(PY) -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	$(PY) -m benchmarks

# Student versions of the exercises (nbgrader): an nbgrader course in assignments/ (git-ignored),
# one assignment per notebook with graded exercises; hand out assignments/release/. Run again, it
# refuses to replace an edited assignments/source/ unless FORCE=1.
assignments: setup  ## student versions of the exercises, with nbgrader (FORCE=1: replace edits)
	$(PY) scripts/assignments.py$(if $(filter-out 0,$(FORCE)), --force)

# Self-check for a student without an instructor: nbgrader's autograder, every check (hidden
# ones too), on your copy of a notebook; prints the points per exercise and why a check failed.
grade: setup  ## grade your notebook: make grade NB=path/to/09_capstone.ipynb
	$(PY) scripts/grade.py $(if $(filter command line environment,$(origin NB)),"$(NB)")

lint: setup  ## ruff: the lint rules and the formatting of pyproject.toml (notebooks excluded)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf runs artifacts .pytest_cache
