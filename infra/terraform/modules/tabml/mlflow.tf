# MLflow on Databricks: the experiment that trained_model logs to and the Unity Catalog
# registered model whose @champion alias batch_predictions loads.

resource "databricks_mlflow_experiment" "tabml" {
  name        = var.experiment_name
  description = "tabml ${var.deployment}: one run per trained_model partition."
}

resource "databricks_registered_model" "tabml" {
  catalog_name = local.catalog_name
  schema_name  = databricks_schema.ml.name
  name         = var.model_name
  comment      = "tabml ${var.deployment}: aliases challenger and champion are moved by the Dagster assets."
  # Unity Catalog lets only the owner create versions and move aliases, and the runner
  # does both (trained_model registers, champion_model promotes).
  owner = databricks_service_principal.runner.application_id
}
