# The plan: every distinct resolved config of the requested tables, computed by the library
# from params/ (the single source of truth shared with dvc.yaml).
from dataclasses import asdict

from simsiam_lab.codedeps import rendering_code
from simsiam_lab.data import check_source, prepared_identity
from simsiam_lab.errors import ConfigError, DataError
from simsiam_lab.rundir import IndexFiles, ReportFiles, RunDir
from simsiam_lab.runplan import RunPlan
from simsiam_lab.study import Params
from simsiam_lab.track import TrackingError, check_server, check_tracking_uri, tracking_uri

sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "scripts"))
from run_env import (
    config_error,
    use_data_source,
    use_tracking_uri,
    warn_if_another_run_holds_the_lock,
)
from snakemake.utils import validate

CONFIG_SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
try:
    validate(config, CONFIG_SCHEMA)
except WorkflowError:
    raise WorkflowError(config_error(config, CONFIG_SCHEMA)) from None
warn_if_another_run_holds_the_lock()
if "data" in config:
    use_data_source(config["data"])
if "tracking_uri" in config:
    try:
        use_tracking_uri(config["tracking_uri"])  # checked there
    except TrackingError as err:
        raise WorkflowError(f"config tracking_uri: {err}") from None
else:
    try:
        check_tracking_uri(tracking_uri())  # $MLFLOW_TRACKING_URI's typo or unwritable store
    except TrackingError as err:
        raise WorkflowError(str(err)) from None


onstart:
    # Before the first job, not at planning (a dry run needs no server): a server that does not
    # answer would otherwise fail every pretraining on its own node.
    try:
        check_server(tracking_uri())
    except TrackingError as err:
        raise WorkflowError(str(err)) from None
    # The plan step: each run's plan into its directory, where its jobs read their config.
    write_plans()


PARAMS = Params("params")
PROFILE = config["profile"]
TABLES = config["tables"]
try:
    PARAMS.profile(PROFILE)
    for table in TABLES:
        PARAMS.table(table)  # an unknown name: one line listing the tables there are
    # Reports can be asked for any table in params/tables, not only those `all` builds.
    PLAN = PARAMS.plan(PROFILE, PARAMS.table_names())
    PROFILE_DATA = PARAMS.resolve(PROFILE).data  # what `prepare` makes, fingerprints included
    RESOURCES = PARAMS.resources(PROFILE)  # what each job asks a cluster for, at this scale
except (ConfigError, DataError) as err:
    raise WorkflowError(f"params: {err}") from None
# Keyed by what it is made from: other data is prepared beside it, so a refused or a passing
# switch of data deletes nothing, and switching back finds the runs up to date.
PREPARED = f"data/prepared/{PROFILE}-{prepared_identity(PROFILE_DATA)}"
if not os.path.isfile(f"{PREPARED}/manifest.json"):  # a prepared source has been checked
    try:
        check_source(PROFILE_DATA)
    except DataError as err:
        raise WorkflowError(f"profile {PROFILE}'s data: {err}") from None
RUN_OF = {trial.ref: run for run, trials in PLAN.items() for trial in trials}
# Each run's resolved config, written into its directory (the plan step) for its jobs, which
# then neither rebuild the plan nor fingerprint the data source again (minutes a job on ImageNet).
RESOLVED = {
    run: PARAMS.resolve(PROFILE, trials[0].row, trials[0].seed) for run, trials in PLAN.items()
}
EVALUATION_OF = {run: asdict(cfg.eval) for run, cfg in RESOLVED.items()}


def write_plans() -> None:
    """The plan step: every planned run's plan (runplan.RunPlan) written into its directory,
    each file only where its content changed. Before the first job rather than as a rule: a
    rule upstream of every pretraining would, whenever it reran, hide the others' own reasons
    to run (Snakemake masks what lies downstream of a job it reruns)."""
    artifact = str(config["encoder_artifact"]).lower() == "true"
    for run, trials in PLAN.items():
        refs = tuple(trial.ref for trial in trials)
        RunPlan(PROFILE, RESOLVED[run], refs, artifact).write(RunDir(f"{RUNS}/{run}"))


RUNS = f"results/{PROFILE}/runs"
RUN = RunDir(f"{RUNS}/{{run}}")  # a run's files, by the wildcard
# `--config threads=N` overrides the threads (torch threads) of both jobs.
THREADS = {job: config.get("threads", asked["cpus"]) for job, asked in RESOURCES.items()}


wildcard_constraints:
    run="[0-9a-f]{10}",
    table="|".join(PARAMS.table_names()),  # so reports/index.md is not a table


def row_runs(table):
    """(row id, run directory) for every trial of every row of the table."""
    return [
        (trial.row.id, f"{RUNS}/{RUN_OF[trial.ref]}")
        for row in PARAMS.table(table).rows.values()
        for trial in PARAMS.row_trials(PROFILE, row)
    ]


def table_category(wildcards) -> str:
    """A table's folder in `snakemake --report`: its title up to the colon, as the paper
    names it ("Table 3"), and its section."""
    return PARAMS.table(wildcards.table).short_name
