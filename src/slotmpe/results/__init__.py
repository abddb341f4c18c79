"""Result tables from evaluated runs: statistics, findings, Tables I and III, extensions, pages.

``stats`` (per-file tables, seed-aware paired effects, mean/std over seeds), ``findings`` (the
paper's claims tested), ``table3`` and ``table1`` (the paper's tables from our runs), ``ext``
(extensions against their bases), ``pages`` (report HTML, training curves), ``capacity``
(parameters per component, MFLOPs), ``build`` (the tables of a results/ tree or published run),
``publish`` / ``provenance`` / ``status`` (a published run built seed by seed: its folder, where
its seeds came from, its ``STATUS.md``). Import the submodules; this package re-exports nothing.
"""
