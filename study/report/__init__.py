"""The report layer: tables, figures and ``results/REPORT.md`` from what the pipeline committed.

It reads ``results/`` only (the metrics JSON and predictions of every run, ``results/runs.csv``,
the ``pruning.json`` files) and never loads a model, so it runs in seconds and a reader can rerun it
on any clone that has the results.

- :mod:`study.report.runs`: the metrics JSONs -> ``results/runs.csv``, one tidy row per run
  (identity, ``score_<family>``, ``mean_score``, ``relative_score`` and ``retained_pct`` = AVG-%,
  efficiency counts; measured timings stay out, under ``results/timings/``), filtering and
  run-to-run comparison;
- :mod:`study.report.pruning_records`: ``pruning.json`` files -> per-block importance scores,
  removed blocks and kept widths;
- :mod:`study.report.figures`: seaborn figures (one function each, data in, ``Figure`` out);
- :mod:`study.report.tables`: Markdown tables in the reference paper's layout, one per recovery;
- :mod:`study.report.paired`: per-question scores from the predictions files and the paired
  bootstrap interval of the gap between two runs (or seed means of runs);
- :mod:`study.report.findings`: the reference study's four findings checked against the runs, each
  comparison with its paired interval, and the table of every comparison;
- :mod:`study.report.document`: the text of ``REPORT.md``;
- :mod:`study.report.summary`: a short plain-text summary for the end of a run (teacher, retained %
  per method and level, one line per verdict, where the report and figures are):
  ``summary_from_files(runs_csv, report_params)``.

``notebooks/05_report.ipynb`` (the ``report`` stage) chains them; ``notebooks/06_explore.ipynb``
filters the runs and redraws any figure.

Decisions a user of the report should know:

- **Missing data draws a placeholder.** Every figure function returns a figure even when its
  runs are absent (no recovered runs, no data-fraction sweep, no ``pruning.json`` on this clone):
  an explicit "no runs: ..." panel saying what is missing. The set of figure files is therefore the
  same on every clone and for every grid, DVC's outputs never go missing, and ``REPORT.md``'s links
  never break.
- **The importance metric of a run** is its metrics JSON's ``metric`` key when present, else read
  from the run name, which the pipeline builds as ``<paradigm>-<metric>-<level>[-<recipe>-<fraction>]``.
- **AVG-%** is recomputed against the teacher rows of the table (the mean of their scores when
  several seeds of the teacher exist), with the record's own ``relative_score`` as the fallback
  when no teacher was evaluated.
- **Seeds**: the table keeps one row per run; figures and tables average over seeds (and show the
  standard deviation when there are several), findings compare seed means, paired question by
  question; a comparison counts when its 95% interval excludes zero.
"""
