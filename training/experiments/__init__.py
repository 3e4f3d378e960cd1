"""Layer 5: experiments that choose and check recipes: cross-validation, cross-site, the paper's comparison,
ensembles, shortcut checks. May import every layer below; only the command line imports it."""
