# The plan: every distinct resolved config of the requested tables, computed by the library
# from params/ (the single source of truth shared with dvc.yaml).
from simsiam_lab.config import ConfigError, Params

PARAMS = Params("params")
PROFILE = config["profile"]
TABLES = config["tables"]
try:
    PARAMS.profile(PROFILE)
    # Reports can be asked for any table in params/tables, not only those `all` builds.
    PLAN = PARAMS.plan(PROFILE, PARAMS.table_names())
except ConfigError as err:
    raise WorkflowError(f"params: {err}") from None
RUN_OF = {row.ref: run for run, rows in PLAN.items() for row in rows}
PREPARED = f"data/prepared/{PROFILE}"
RUNS = f"results/{PROFILE}/runs"
THREADS = config.get("threads", 2)


def run_dir(table, row_id):
    return f"{RUNS}/{RUN_OF[f'{table}:{row_id}']}"


def row_runs(table):
    return {row_id: run_dir(table, row_id) for row_id in PARAMS.table(table).rows}


onstart:
    # Create the MLflow store and experiment once, before parallel jobs race to do it.
    shell(f"simsiam init-tracking --profile {PROFILE}")
