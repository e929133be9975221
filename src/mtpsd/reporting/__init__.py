"""Reporting stage: results of every run gathered into one table (``summarize``), the claims
checked on them with the paper's tolerances (``report``, ``paper_models``), the seed spread
(``seed_spread``), the ablation section (``ablation_report``) and the paper-vs-ours tables
(``tables``). Figures are ``mtpsd.plotting``."""
