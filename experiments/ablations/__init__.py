"""Ablation grids of both stages at a CPU-feasible size, with a report computed from the runs.

    python -m experiments.ablations --suite drtmo|cfnet|all --workdir DIR [--quick]
        [--hdr_dir ../shared/data/hdri] [--variants full,no_skips,...] [--steps N] [--seed 0]

Each run is ``loop.train_and_evaluate`` in its own workdir (DIR/drtmo/<variant>/{up,down},
DIR/cfnet/<variant>), so an interrupted grid resumes where it stopped and a finished run (latest
checkpoint at num_train_steps with an eval record for it) is skipped. The report
(DIR/ablations.md, DIR/ablations.json, DIR/plots/) is rebuilt from every run found under DIR.

Grids and sizes (:mod:`.grid`; --quick uses test-sized models, data and 2 steps):

* Stage 1 (DrTMO, Endo et al. 2017), every variant trained in both directions (the merged HDR
  needs the pair): full (the CPU recipe of configs/drtmo.py: residual on the naive bracket, no
  dropout) | no skips | no residual | neither | 2D decoder | 1 / 10 training CRFs | L1 over
  valid slots (eq. 3/4) | halved width (the 'cpu' preset halved: the paper's full/half widths do
  not train on a CPU). Width preset 'cpu' at depth 5, 32x32 training crops of 128x128 views,
  batch 4, 300 steps. All variants are validated on one held-out set: the held-out scenes
  rendered through all 11 parametric CRFs (so the CRF variants meet cameras they never saw), on
  whole 128x128 views; PU21 of the merged 17-image stack of each variant's pair.
* Stage 2 (CF-Net, Deng et al. 2021, synthetic pairs): full (T = 3, coupled, separate weights,
  SRB loss of eq. 19, x2) | T = 1, 2, 4 | uncoupled | shared step weights | no SRB loss | x4.
  16 features, 3 groups, 32x32 HR training crops (LR 16 at x2, 8 at x4), batch 4, 150 steps;
  evaluated on 96x96 HR centre crops of the test split (LR 48 at x2, 24 at x4).

Modules: :mod:`.grid` (variants, tables, configs), :mod:`.claims` (the papers' claims and their
verdicts), :mod:`.run` (training, evaluation through :mod:`hdr_jax.eval`, bookkeeping),
:mod:`.report` (Markdown, JSON, plots); ``__main__`` is the command line.
"""
