"""Give every cell an id, and tag cells marked `# NBVAL_RAISES_EXCEPTION` with `raises-exception`.

nbval reads the comment; JupyterLab's Run All reads the tag and goes on past the cell that is
meant to fail. `make notebooks` runs this before executing, so a student's Run All never stops
at a deliberate error. Usage: python scripts/normalise_notebooks.py notebooks/*.ipynb
"""

import sys

import nbformat


def tag_raising_cells(path: str) -> int:
    nb = nbformat.read(path, as_version=4)
    missing_ids, nb = nbformat.validator.normalize(nb)  # cells added by scripts lack an id
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_RAISES_EXCEPTION" in cell.source:
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
                changed += 1
    if changed or missing_ids:
        nbformat.write(nbformat.from_dict(nb), path)
    return changed


if __name__ == "__main__":
    for notebook in sys.argv[1:]:
        print(f"{notebook}: tagged {tag_raising_cells(notebook)} cell(s)")
