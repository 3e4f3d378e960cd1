"""The commands of `python -m training`, one module each with its arguments beside its code; `COMMANDS` is the one
registry the parser is built from (training/cli.py). A new command is a new module and a line here."""

from __future__ import annotations

from training.commands import (
    calibrate,
    compare,
    confound,
    cross_site,
    cross_validate,
    ensemble,
    ensemble_cross_site,
    ensemble_crossval,
    evaluate,
    feature_probe,
    import_weights,
    marks,
    modality,
    operating_points,
    pretrain,
    record,
    results_table,
    train,
    train_all,
)
from training.commands.arguments import Command

COMMANDS: tuple[Command, ...] = (
    *(
        module.COMMAND
        for module in (
            train,
            train_all,
            cross_validate,
            cross_site,
            compare,
            feature_probe,
            pretrain,
            import_weights,
            calibrate,
            ensemble,
            ensemble_crossval,
            ensemble_cross_site,
            evaluate,
            operating_points,
            confound,
            marks,
            modality,
            results_table,
        )
    ),
    record.CROSSVAL,
    record.CROSS_SITE,
    record.CONFOUND,
)
